package bench

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// Progress prints what a long case is doing: a line every few seconds
// while a case runs longer than that, so a five-minute run is not silent.
// A nil *Progress prints nothing.
type Progress struct {
	w     io.Writer
	every time.Duration

	mu        sync.Mutex
	name      string
	step      string
	caseStart time.Time
}

// NewProgress returns a Progress writing to w every interval.
func NewProgress(w io.Writer, every time.Duration) *Progress {
	return &Progress{w: w, every: every}
}

// Run prints progress lines until ctx is done; the caller owns the
// goroutine it runs on.
func (p *Progress) Run(ctx context.Context) {
	if p == nil {
		return
	}
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.mu.Lock()
			if p.name != "" && time.Since(p.caseStart) >= p.every {
				fmt.Fprintf(p.w, "  … %s [%s]: %s\n", p.name, time.Since(p.caseStart).Round(time.Second), p.step)
			}
			p.mu.Unlock()
		}
	}
}

// Case starts a named case (or ends one, with "").
func (p *Progress) Case(name string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.name, p.step, p.caseStart = name, "starting", time.Now()
	if name != "" {
		fmt.Fprintf(p.w, "case %s\n", name)
	}
}

// Step says what the current case is doing now.
func (p *Progress) Step(format string, args ...any) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.step = fmt.Sprintf(format, args...)
}
