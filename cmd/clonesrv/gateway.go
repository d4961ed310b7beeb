package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/gateway"
	"github.com/clonekv/clonekv/server"
	"github.com/clonekv/clonekv/transport"
)

// gatewayFlags are the HTTP gateway's settings (package gateway).
type gatewayFlags struct {
	on        bool
	readOnly  bool
	tokenFile string
}

func defineGatewayFlags(fs *flag.FlagSet, g *gatewayFlags) {
	fs.BoolVar(&g.on, "http-gateway", true, "serve the HTTP/JSON API (/v1/) and the web inspector (/ui/) on the --http listener")
	fs.BoolVar(&g.readOnly, "http-read-only", false, "refuse writes (PUT, DELETE) through the HTTP gateway")
	fs.StringVar(&g.tokenFile, "http-token-file", "", "file holding the bearer token that HTTP writes need (required for HTTP writes when CURVE is on)")
}

// gatewaySettings is what serve needs to start the gateway.
type gatewaySettings struct {
	on       bool
	readOnly bool
	token    string
	curve    *transport.CurveClient // the gateway client's keys, with CURVE
	// curveNoToken: read-only because CURVE is on and no token was given.
	curveNoToken bool
}

// settleGateway checks the gateway's flags. With CURVE the gateway's
// client needs a key the server admits: a fresh key pair is made for this
// run and, when there is an allow list, added to it (it never leaves the
// process). Without a token file the gateway is read-only under CURVE:
// the network side is authenticated, and HTTP must not be a way around it.
func settleGateway(f *flags, c *server.Config, bad func(key, format string, args ...any)) gatewaySettings {
	g := f.gateway
	s := gatewaySettings{on: g.on && f.http != "", readOnly: g.readOnly}
	if g.tokenFile != "" {
		switch b, err := os.ReadFile(g.tokenFile); {
		case f.http == "" || !g.on:
			bad("http-token-file", "needs the --http listener with the gateway on")
		case err != nil:
			bad("http-token-file", "%v", err)
		case len(strings.TrimSpace(string(b))) < 16:
			bad("http-token-file", "the token must be at least 16 characters")
		default:
			s.token = strings.TrimSpace(string(b))
		}
	}
	if g.readOnly && f.http == "" {
		bad("http-read-only", "needs the --http listener")
	}
	if !s.on || c.Curve == nil {
		return s
	}
	pub, sec, err := zmq.NewCurveKeypair()
	if err != nil {
		bad("http-gateway", "making the gateway's CURVE key pair: %v", err)
		return s
	}
	serverPub, err := c.Curve.PublicKey()
	if err != nil {
		return s // reported by the server's own check
	}
	if len(c.Curve.AllowedClients) > 0 {
		c.Curve.AllowedClients = append(c.Curve.AllowedClients, pub)
	}
	s.curve = &transport.CurveClient{ServerKey: serverPub, PublicKey: pub, SecretKey: sec}
	if s.token == "" && !s.readOnly {
		s.readOnly = true
		s.curveNoToken = true
	}
	return s
}

// gatewayEndpoint is where the gateway's client reaches the server: the
// bound address, or loopback when the server listens on every interface.
func gatewayEndpoint(bind string, port int) string {
	switch bind {
	case "", "*", "0.0.0.0":
		bind = "127.0.0.1"
	case "::", "[::]":
		bind = "::1"
	}
	return transport.Endpoint(strings.TrimSuffix(strings.TrimPrefix(bind, "["), "]"), port)
}

// startGateway starts the gateway's client of srv.
func startGateway(st *settled, srv *server.Server) (*gateway.Gateway, error) {
	g := st.gw
	if g.curveNoToken {
		st.log.Warn("HTTP writes are off: with CURVE on they need a bearer token (--http-token-file)")
	}
	cfg := gateway.Config{
		Endpoint: gatewayEndpoint(st.srv.Bind, srv.Port()), Curve: g.curve,
		ReadOnly: g.readOnly, Token: g.token,
		MaxKey: st.srv.Limits.MaxKey, MaxBody: st.srv.Limits.MaxBody,
		History: srv.History,
		Subscribers: func() int {
			for _, p := range srv.Peers() {
				if p.Socket == "publisher" {
					return int(p.Connected)
				}
			}
			return 0
		},
		Logger: st.log,
	}
	gw, err := gateway.New(cfg)
	if err != nil {
		return nil, err
	}
	st.log.Info("http gateway on", "api", "/v1/", "inspector", "/ui/", "server", cfg.Endpoint, "read_only", cfg.ReadOnly, "token", cfg.Token != "")
	return gw, nil
}

// stopGateway ends the gateway's streams (at once on the stop signal, so
// that the HTTP server's shutdown does not wait for them), and closes it
// once the HTTP server has stopped.
func stopGateway(gw *gateway.Gateway, log interface{ Warn(string, ...any) }) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := gw.Shutdown(ctx); err != nil {
		log.Warn("http gateway", "err", fmt.Errorf("shutdown: %w", err))
	}
}
