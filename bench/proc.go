package bench

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ProcSample is what /proc says about one process at one moment.
type ProcSample struct {
	// CPU is the process's CPU time: user + system from /proc/PID/stat, in
	// clock ticks (10 ms on Linux), so only good over long windows.
	CPU time.Duration
	// RunNanos is the sum of every live thread's time on a CPU from
	// /proc/PID/task/*/schedstat, in nanoseconds: precise over short
	// windows as long as no thread exits in between (Go's rarely do).
	RunNanos time.Duration
	RSS      int64 // VmRSS, bytes
	HWM      int64 // VmHWM, the peak RSS, bytes
}

// clockTick is USER_HZ, which Linux fixes at 100 for /proc.
const clockTick = 10 * time.Millisecond

// ReadProc samples process pid.
func ReadProc(pid int) (ProcSample, error) {
	var s ProcSample
	dir := fmt.Sprintf("/proc/%d", pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return s, fmt.Errorf("read proc stat: %w", err)
	}
	// Fields after the command (which may hold spaces) start past ") ".
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("parse %s/stat: no command", dir)
	}
	f := strings.Fields(string(stat[i+1:]))
	// utime and stime are fields 14 and 15 of the line, 12 and 13 here.
	if len(f) < 13 {
		return s, fmt.Errorf("parse %s/stat: %d fields", dir, len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("parse %s/stat: utime %q stime %q", dir, f[11], f[12])
	}
	s.CPU = time.Duration(ut+st) * clockTick

	status, err := os.ReadFile(dir + "/status")
	if err != nil {
		return s, fmt.Errorf("read proc status: %w", err)
	}
	for line := range strings.Lines(string(status)) {
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			s.RSS = parseKB(line)
		case strings.HasPrefix(line, "VmHWM:"):
			s.HWM = parseKB(line)
		}
	}
	tasks, _ := filepath.Glob(dir + "/task/*/schedstat")
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			if ns, err := strconv.ParseInt(f[0], 10, 64); err == nil {
				s.RunNanos += time.Duration(ns)
			}
		}
	}
	return s, nil
}

// parseKB parses "VmRSS:   1234 kB" into bytes; 0 if malformed.
func parseKB(line string) int64 {
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0
	}
	n, _ := strconv.ParseInt(f[1], 10, 64)
	return n * 1024
}
