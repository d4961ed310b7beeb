package transport

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// lingerChildEnv runs closeMidMessage in a child process: libzmq's abort
// would end the test binary itself.
const lingerChildEnv = "CLONEKV_TEST_LINGER_CHILD"

// closeMidMessage streams multipart messages from a ROUTER to a DEALER that
// never reads them, until the ROUTER's engine waits mid-message on a full
// TCP buffer; then it closes the DEALER and at once the ROUTER, as a server
// shutting down beside a peer that leaves does. rawZero sets linger 0
// after Options (what MinLinger forbids).
func closeMidMessage(rounds int, rawZero bool) error {
	key := bytes.Repeat([]byte("k"), 300)
	for i := range rounds {
		zctx, err := zmq.NewContext()
		if err != nil {
			return err
		}
		router, err := Bind(zctx, zmq.ROUTER, "tcp://127.0.0.1:*", Options{SndHWM: 1000, Mandatory: true})
		if err != nil {
			return err
		}
		ep, err := router.GetLastEndpoint()
		if err != nil {
			return err
		}
		dealer, err := Connect(zctx, zmq.DEALER, ep, Options{RcvHWM: 10, Identity: "peer"})
		if err != nil {
			return err
		}
		if rawZero {
			if err := router.SetLinger(0); err != nil {
				return err
			}
		}
		if _, err := dealer.SendMessage("hello"); err != nil {
			return err
		}
		if _, err := router.RecvMessageBytes(0); err != nil {
			return err
		}
		// The large frame first: an engine that stops at a full TCP buffer
		// has then most often sent part of a message, not all of it. The
		// pipe is full (EAGAIN) once the engine stopped taking from it.
		full := false
		for sent := 0; sent < 200000 && !full; sent++ {
			_, err := router.SendMessageDontwait("peer", key, "12345678", "uuid", "props", "v")
			switch {
			case IsAgain(err):
				full = true
			case err != nil:
				return fmt.Errorf("round %d: send: %w", i, err)
			}
		}
		if !full {
			return fmt.Errorf("round %d: the peer's pipe never filled", i)
		}
		dealer.Close()
		router.Close()
		if err := zctx.Term(); err != nil {
			return err
		}
	}
	return nil
}

func TestMain(m *testing.M) {
	if mode := os.Getenv(lingerChildEnv); mode != "" {
		n, _ := strconv.Atoi(os.Getenv(lingerChildEnv + "_N"))
		if err := closeMidMessage(n, mode == "zero"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runLingerChild runs closeMidMessage in a child and returns its output and
// its error (an *exec.ExitError with SIGABRT when libzmq aborted).
func runLingerChild(t *testing.T, mode string, n int) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), lingerChildEnv+"="+mode, lingerChildEnv+"_N="+strconv.Itoa(n))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestLingerZeroAbortsLibzmq: sockets made here survive a peer that leaves
// while they close mid-message (MinLinger). The same sequence with linger 0
// aborts libzmq 4.3 in its first few rounds on this machine; that run is
// reported, not required, so a libzmq without the fault passes too.
func TestLingerZeroAbortsLibzmq(t *testing.T) {
	const rounds = 50
	start := time.Now()
	if out, err := runLingerChild(t, "options", rounds); err != nil {
		t.Fatalf("%d closes mid-message with Options' linger: %v\n%s", rounds, err, out)
	}
	t.Logf("%d closes mid-message with Options' linger (%v): no abort, %v", rounds, MinLinger, time.Since(start).Round(time.Millisecond))
	out, err := runLingerChild(t, "zero", rounds)
	t.Logf("the same with linger 0: %v %s", err, bytes.TrimSpace([]byte(out)))
}
