package server

import (
	"errors"
	"fmt"
	"log/slog"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/stats"
	"github.com/clonekv/clonekv/transport"
)

// CurveConfig turns on ZeroMQ's CURVE security (encryption plus, with an
// allow list, client authentication) on all three server sockets. The Clone
// protocol has none of its own; CURVE adds it below the message format, so
// frames are unchanged.
type CurveConfig struct {
	// SecretKey is the server's secret key, Z85 (40 characters). Clients
	// need the matching public key (see PublicKey).
	SecretKey string
	// AllowedClients are the Z85 public keys of the clients admitted. Empty
	// admits any client that completes the CURVE handshake with the server's
	// public key (encryption without client authentication).
	AllowedClients []string
}

// SourceAuth is where refused CURVE clients are counted in stats: reason
// ReasonUnknownKey for a key not on the allow list (decided by our ZAP
// handler), ReasonHandshake for a connection that failed the handshake
// (a plaintext client, a client with the wrong server key).
const SourceAuth stats.Source = "auth"

// Reasons a client is refused, counted under SourceAuth.
const (
	ReasonUnknownKey = "unknown_client_key"
	ReasonHandshake  = "handshake_failed"
)

// zapDomain is the ZAP domain our sockets announce; the handler checks it.
const zapDomain = "clonekv"

// zapEndpoint is where libzmq sends ZAP requests (RFC 27), per context.
const zapEndpoint = "inproc://zeromq.zap.01"

// z85KeyLen is the length of a 32-byte CURVE key in Z85.
const z85KeyLen = 40

// PublicKey returns the public key matching c.SecretKey.
func (c *CurveConfig) PublicKey() (string, error) {
	if len(c.SecretKey) != z85KeyLen {
		return "", fmt.Errorf("curve secret key: want %d Z85 characters, got %d", z85KeyLen, len(c.SecretKey))
	}
	pub, err := zmq.AuthCurvePublic(c.SecretKey)
	if err != nil {
		return "", fmt.Errorf("curve secret key: %w", err)
	}
	return pub, nil
}

func (c *CurveConfig) validate() error {
	if c == nil {
		return nil
	}
	if _, err := c.PublicKey(); err != nil {
		return err
	}
	for _, k := range c.AllowedClients {
		if len(k) != z85KeyLen || len(zmq.Z85decode(k)) != 32 {
			return fmt.Errorf("curve allowed client key %q: want %d Z85 characters", k, z85KeyLen)
		}
	}
	return nil
}

// curveServer is the transport option for the server sockets (nil: off).
func (c *CurveConfig) curveServer() *transport.CurveServer {
	if c == nil {
		return nil
	}
	return &transport.CurveServer{SecretKey: c.SecretKey, Domain: zapDomain}
}

// zapHandler answers libzmq's ZAP requests for the server's context.
//
// Why our own and not pebbe/zmq4's AuthStart: pebbe's handler binds in the
// package's default context and keeps its allow list in package globals.
// ZAP requests go to the inproc endpoint of the socket's own context, so
// sockets of a server's private context never reach pebbe's handler and
// libzmq then admits every CURVE client (verified: a wrong key got through).
// Ours lives in the server's context, holds its own allow list, and counts
// and logs every refusal.
//
// Its socket is bound in New, before the server sockets, so no handshake
// can slip past it; requests queue until run starts in Run. run is the
// socket's only user and returns when the context is terminated.
type zapHandler struct {
	sock    *zmq.Socket
	allowed map[string]bool // nil: any key
	log     *slog.Logger
	rejects *stats.RejectLog
}

func newZAPHandler(zctx *zmq.Context, c *CurveConfig, log *slog.Logger, rejects *stats.RejectLog) (*zapHandler, error) {
	sock, err := zctx.NewSocket(zmq.REP)
	if err != nil {
		return nil, fmt.Errorf("zap socket: %w", err)
	}
	if err := sock.SetLinger(0); err != nil {
		sock.Close()
		return nil, fmt.Errorf("zap socket linger: %w", err)
	}
	if err := sock.Bind(zapEndpoint); err != nil {
		sock.Close()
		return nil, fmt.Errorf("zap bind %s: %w", zapEndpoint, err)
	}
	z := &zapHandler{sock: sock, log: log, rejects: rejects}
	if len(c.AllowedClients) > 0 {
		z.allowed = make(map[string]bool, len(c.AllowedClients))
		for _, k := range c.AllowedClients {
			z.allowed[k] = true
		}
	}
	return z, nil
}

// run answers requests until the context is terminated, then closes the
// socket.
func (z *zapHandler) run() {
	defer z.sock.Close()
	for {
		req, err := z.sock.RecvMessageBytes(0)
		if err != nil {
			if isTerm(err) {
				return
			}
			z.log.Warn("zap receive", "err", err)
			continue
		}
		reply := z.decide(req)
		if _, err := z.sock.SendMessage(reply); err != nil {
			if isTerm(err) {
				return
			}
			z.log.Warn("zap reply", "err", err)
		}
	}
}

// decide turns a ZAP request (RFC 27: version, request id, domain, address,
// identity, mechanism, credentials...) into the reply frames.
func (z *zapHandler) decide(req [][]byte) [][]byte {
	if len(req) < 6 {
		// Not something libzmq sends; a REP must still answer.
		return [][]byte{[]byte("1.0"), nil, []byte("500"), []byte("malformed ZAP request"), nil, nil}
	}
	version, id, domain, address, mechanism := req[0], req[1], string(req[2]), string(req[3]), string(req[5])
	reply := func(code, text, user string) [][]byte {
		return [][]byte{version, id, []byte(code), []byte(text), []byte(user), nil}
	}
	if mechanism != "CURVE" || domain != zapDomain || len(req) < 7 || len(req[6]) != 32 {
		z.rejects.Reject(SourceAuth, ReasonHandshake,
			fmt.Errorf("mechanism %q in domain %q", mechanism, domain), "peer", address)
		return reply("400", "NO ACCESS", "")
	}
	key := zmq.Z85encode(string(req[6]))
	if z.allowed != nil && !z.allowed[key] {
		z.rejects.Reject(SourceAuth, ReasonUnknownKey, errors.New("client key not in the allow list"),
			"peer", address, "client_key", key)
		return reply("400", "NO ACCESS", "")
	}
	z.log.Debug("client admitted", "peer", address, "client_key", key)
	// The user id becomes the connection's User-Id property: the client key.
	return reply("200", "OK", key)
}

// isTerm reports whether err means the context is being terminated.
func isTerm(err error) bool { return zmq.AsErrno(err) == zmq.ETERM }
