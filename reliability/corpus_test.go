package reliability

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/clonekv/clonekv/kvmsg"
)

// malformed is one case of testdata/malformed.txt.
type malformed struct {
	Port   string // "collector" or "snapshot"
	Reason string
	Frames [][]byte
}

// loadMalformed reads the shared corpus of malformed messages.
func loadMalformed(t testing.TB) []malformed {
	t.Helper()
	b, err := os.ReadFile("../testdata/malformed.txt")
	if err != nil {
		t.Fatalf("malformed corpus: %v", err)
	}
	var out []malformed
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.SplitN(line, " ", 3)
		if len(f) != 3 {
			t.Fatalf("malformed.txt:%d: want port reason frames", n)
		}
		m := malformed{Port: f[0], Reason: f[1]}
		rest := strings.TrimSpace(f[2])
		for rest != "" {
			q, err := strconv.QuotedPrefix(rest)
			if err != nil {
				t.Fatalf("malformed.txt:%d: %v", n, err)
			}
			s, _ := strconv.Unquote(q)
			m.Frames = append(m.Frames, []byte(s))
			rest = strings.TrimSpace(rest[len(q):])
		}
		out = append(out, m)
	}
	return out
}

func byPort(cases []malformed, port string) [][][]byte {
	var out [][][]byte
	for _, c := range cases {
		if c.Port == port {
			out = append(out, c.Frames)
		}
	}
	return out
}

// randomBadKVSET returns random frames that can never decode as a KVSET:
// either not five frames, or a sequence frame that is not 8 bytes.
func randomBadKVSET(r *rand.Rand) [][]byte {
	n := 1 + r.IntN(7)
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = randBytes(r, r.IntN(40))
	}
	if n == kvmsg.NumFrames && len(frames[kvmsg.FrameSeq]) == kvmsg.SeqLen {
		frames[kvmsg.FrameSeq] = frames[kvmsg.FrameSeq][:3]
	}
	return frames
}

// randomBadRequest returns random frames that are never a valid snapshot
// request: not two frames, or a first frame other than ICANHAZ?.
func randomBadRequest(r *rand.Rand) [][]byte {
	n := 1 + r.IntN(5)
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = randBytes(r, r.IntN(40))
	}
	if n == 2 && string(frames[0]) == kvmsg.CmdSnapshot {
		frames[0] = []byte("ICANHAZ!")
	}
	return frames
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}
