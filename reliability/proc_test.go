package reliability

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clonekv/clonekv/internal/testkit"
)

// binDir holds binaries built once per test run; TestMain removes it.
var binDir string

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runHelperServer())
	}
	if os.Getenv(clientHelperEnv) != "" {
		os.Exit(runHelperClient())
	}
	dir, err := os.MkdirTemp("", "clonekv-reliability-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	buildOnce sync.Once
	buildErr  error
)

// clonesrvBin builds cmd/clonesrv (without -race: it is the real
// process under test) once and returns its path.
func clonesrvBin(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(binDir, "clonesrv")
	buildOnce.Do(func() {
		buildErr = testkit.GoBuild(bin, "github.com/clonekv/clonekv/cmd/clonesrv")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return bin
}

// proc is a clonesrv process with its JSON log lines collected.
type proc struct {
	cmd    *exec.Cmd
	port   int
	mu     sync.Mutex
	lines  []map[string]any
	exited chan struct{}
	state  *os.ProcessState
}

// startClonesrv runs clonesrv on 127.0.0.1 with args (add --port, or a
// free triple is chosen) and waits until it listens. The process is killed
// when the test ends if it is still running.
func startClonesrv(t testing.TB, args ...string) *proc {
	t.Helper()
	args = append([]string{"--bind", "127.0.0.1", "--log-format", "json", "--log-level", "info"}, args...)
	if !strings.Contains(strings.Join(args, " "), "--port") {
		args = append(args, "--port", "0")
	}
	if j := strings.Join(args, " "); !strings.Contains(j, "--data-dir") && !strings.Contains(j, "--memory") {
		args = append(args, "--data-dir", t.TempDir()) // a fresh history
	}
	return startProc(t, exec.Command(clonesrvBin(t), args...))
}

func startProc(t testing.TB, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	listening := make(chan int, 1)
	go func() {
		p.readLog(stderr, listening)
		p.state, _ = cmd.Process.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.port = <-listening:
	case <-p.exited:
		t.Fatalf("%s exited before listening: %v\n%s", cmd.Path, p.state, p.logText())
	case <-time.After(15 * time.Second):
		t.Fatalf("%s not listening in 15s\n%s", cmd.Path, p.logText())
	}
	return p
}

func (p *proc) readLog(r io.Reader, listening chan<- int) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			rec = map[string]any{"msg": sc.Text()}
		}
		p.mu.Lock()
		p.lines = append(p.lines, rec)
		p.mu.Unlock()
		if rec["msg"] == "clonekv server listening" {
			ep, _ := rec["snapshot"].(string)
			if i := strings.LastIndexByte(ep, ':'); i >= 0 {
				if port, err := strconv.Atoi(ep[i+1:]); err == nil {
					listening <- port
				}
			}
		}
	}
}

// logRecord returns the last log record with message msg.
func (p *proc) logRecord(msg string) (map[string]any, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := len(p.lines) - 1; i >= 0; i-- {
		if p.lines[i]["msg"] == msg {
			return p.lines[i], true
		}
	}
	return nil, false
}

func (p *proc) logText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.lines {
		j, _ := json.Marshal(l)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the process to exit.
func (p *proc) wait(t testing.TB, d time.Duration) *os.ProcessState {
	t.Helper()
	select {
	case <-p.exited:
		return p.state
	case <-time.After(d):
		t.Fatalf("process did not exit in %v\n%s", d, p.logText())
		return nil
	}
}

// num reads a numeric log attribute.
func num(rec map[string]any, key string) int64 {
	f, _ := rec[key].(float64)
	return int64(f)
}
