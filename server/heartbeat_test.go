package server

import (
	"bytes"
	"net"
	"strconv"
	"testing"
	"time"
)

// zmtpDealerHello is what a ZMTP 3.1 DEALER sends to open a connection
// with the NULL mechanism: the 64-byte greeting, then the READY command
// with its Socket-Type property.
func zmtpDealerHello() []byte {
	var b bytes.Buffer
	b.Write([]byte{0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F}) // signature
	b.Write([]byte{3, 1})                               // version 3.1 (heartbeats)
	b.Write(append([]byte("NULL"), make([]byte, 16)...))
	b.WriteByte(0)            // as-server
	b.Write(make([]byte, 31)) // filler
	var ready bytes.Buffer
	ready.WriteByte(5)
	ready.WriteString("READY")
	ready.WriteByte(byte(len("Socket-Type")))
	ready.WriteString("Socket-Type")
	ready.Write([]byte{0, 0, 0, byte(len("DEALER"))})
	ready.WriteString("DEALER")
	b.Write([]byte{0x04, byte(ready.Len())}) // a short command frame
	b.Write(ready.Bytes())
	return b.Bytes()
}

// TestZMTPHeartbeatDropsVanishedPeer: a peer that completes the ZMTP
// handshake and then goes silent (it never answers the server's PINGs, as
// a stopped process or a vanished host would not) is disconnected within
// the heartbeat timeout, while a live libzmq peer on the same socket stays.
func TestZMTPHeartbeatDropsVanishedPeer(t *testing.T) {
	const ivl, timeout = 100 * time.Millisecond, 500 * time.Millisecond
	srv := startServer(t, Config{ZMTPHeartbeat: ivl, ZMTPHeartbeatTimeout: timeout})
	p := newPeer(t, srv.Port())
	live := p.dealer()
	if snap, _ := snapshot(t, live, "", 5*time.Second); len(snap) != 0 {
		t.Fatalf("empty server sent %d KVSYNCs", len(snap))
	}
	before := srv.peersOf("snapshot")

	conn, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(srv.Port())))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(zmtpDealerHello()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the silent peer's handshake", func() bool {
		return srv.peersOf("snapshot").Handshakes > before.Handshakes
	})
	joined := time.Now()
	waitFor(t, 10*timeout+5*time.Second, "the silent peer dropped", func() bool {
		return srv.peersOf("snapshot").Closed > before.Closed
	})
	took := time.Since(joined)
	t.Logf("silent peer dropped %v after its handshake (interval %v, timeout %v)", took.Round(time.Millisecond), ivl, timeout)
	if took < timeout/2 {
		t.Errorf("dropped after %v, before the heartbeat timeout %v could have passed", took, timeout)
	}
	// The server closed it: reading reaches EOF once the PINGs it sent are read.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	for {
		if _, err := conn.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the silent peer's connection is still open on the server side")
			}
			break
		}
	}
	// The live peer answered every PING: still connected and served.
	if got := srv.peersOf("snapshot"); got.Connected != 1 || got.Closed != before.Closed+1 {
		t.Errorf("snapshot socket: %d connected, %d closed; want the live peer only (1), one closed", got.Connected, got.Closed-before.Closed)
	}
	if _, end := snapshot(t, live, "", 5*time.Second); string(end.Key) != "KTHXBAI" {
		t.Errorf("live peer after the drop: %q", end.Key)
	}
}
