package bench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/clonekv/clonekv/client"
	"github.com/clonekv/clonekv/internal/tcpproxy"
)

// ResumeParams are the knobs of the resume case (issue 14). A clonekv
// client (the client package, as an application runs it) of Keys keys is
// cut off by a TCP proxy for Offline while updates stream at Rate, once
// resuming and once with NoResume (a whole snapshot), on the same server.
// Then HerdClients clients of HerdKeys keys follow a durable server that is
// stopped and started again on its data directory, and come back together.
type ResumeParams struct {
	Keys        int
	Rate        float64
	Offline     time.Duration
	HerdClients int
	HerdKeys    int
}

// ResumeResult is one client's outage.
type ResumeResult struct {
	Mode     string  `json:"mode"` // "resume" or "full" (client.Options.NoResume)
	Kind     string  `json:"kind"` // what the re-join was: client.JoinStats.Kind
	Keys     int     `json:"keys"`
	Rate     float64 `json:"rate"`
	Offline  Dur     `json:"offline"`
	Missed   int64   `json:"missed"`          // sequences the server moved on while the client was away (updates)
	Rejoin   Dur     `json:"rejoin"`          // the re-join's request → in sync: reply and swap (client.JoinStats.Took)
	Connect  Dur     `json:"connect"`         // the re-join's start → its request (connecting, the SUB's handshake)
	Restore  Dur     `json:"restore_to_sync"` // network back → in sync (includes the client's reconnect backoff, up to 1s)
	Messages int64   `json:"messages"`        // of the reply, KTHXBAI included
	Bytes    int64   `json:"bytes"`           // of the reply
	Err      string  `json:"error,omitempty"`
}

// ResumeHerdResult is the herd's return after a server restart.
type ResumeHerdResult struct {
	Clients   int    `json:"clients"`
	Keys      int    `json:"keys"`
	Restart   Dur    `json:"restart"`    // server stopped → serving again (raft log replayed)
	AllBack   Dur    `json:"all_back"`   // serving again → every client in sync
	Resumed   int    `json:"resumed"`    // clients whose every re-join was a delta
	Full      int    `json:"full"`       // clients with a whole snapshot among their re-joins
	Resumes   int64  `json:"resumes"`    // delta re-joins in all (a client may have needed two)
	Messages  int64  `json:"messages"`   // received by all clients in their re-joins
	Bytes     int64  `json:"bytes"`      // ...and their bytes: what the restarted server sent them
	FullBytes int64  `json:"full_bytes"` // one whole snapshot's bytes × clients, for comparison
	Err       string `json:"error,omitempty"`
}

// ResumeReport is the resume case's output.
type ResumeReport struct {
	Outage []ResumeResult    `json:"outage"`
	Herd   *ResumeHerdResult `json:"herd,omitempty"`
}

func runResume(ctx context.Context, l Launcher, p ResumeParams, prog *Progress) (*ResumeReport, error) {
	rep := &ResumeReport{}
	out, err := resumeOutage(ctx, l, p, prog)
	rep.Outage = out
	if err != nil {
		return rep, err
	}
	if p.HerdClients > 0 {
		h, err := resumeHerd(ctx, l, p, prog)
		if err != nil {
			if ctx.Err() != nil {
				return rep, err
			}
			h.Err = err.Error() // a loaded machine: reported, not fatal
		}
		rep.Herd = &h
	}
	return rep, nil
}

// quietClient is a client's options for the benchmark: logs off, patient
// joins (large maps on a loaded machine), a deep subscriber queue so that a
// join of a large map under load does not end in a gap that would spoil
// the figure.
func quietClient(ep string) client.Options {
	return client.Options{Endpoints: []string{ep}, JoinTimeout: 30 * time.Second, SubRcvHWM: 200_000,
		Logger: slog.New(slog.DiscardHandler)}
}

// resumeOutage measures one client's outage, resume then full, on one
// in-memory server with updates streaming throughout.
func resumeOutage(ctx context.Context, l Launcher, p ResumeParams, prog *Progress) (out []ResumeResult, err error) {
	prog.Step("resume: preloading %d keys", p.Keys)
	t, err := l.Launch(ctx, ImplClonekv)
	if err != nil {
		return nil, err
	}
	zctx, err := newZctx(64)
	if err != nil {
		return nil, errors.Join(err, t.Stop())
	}
	defer func() { err = errors.Join(err, zctx.Term(), t.Stop()) }()
	m := &mapRig{target: t, zctx: zctx, clk: newClock(), p: MapParams{Loaders: 4}, buckets: 1}
	if _, err := m.load(ctx, p.Keys); err != nil {
		return nil, err
	}
	px, err := tcpproxy.Start(t.Port)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, px.Close()) }()

	// Updates of random existing keys at Rate until the case ends.
	keys := make([][]byte, p.Keys)
	for i := range keys {
		keys[i] = m.key((i * 7919) % p.Keys)
	}
	uctx, stopUpdates := context.WithCancel(ctx)
	var uerr error
	var uwg sync.WaitGroup
	uwg.Go(func() {
		_, uerr = publish(uctx, zctx, t.Port, pubSpec{Keys: keys, Body: 16, N: 1 << 40, Rate: p.Rate}, m.clk)
	})
	defer func() {
		stopUpdates()
		uwg.Wait()
		if uerr != nil && !errors.Is(uerr, context.Canceled) {
			err = errors.Join(err, uerr)
		}
	}()
	for _, mode := range []string{"resume", "full"} {
		prog.Step("resume: a client of %d keys offline for %v at %s updates/s (%s)", p.Keys, p.Offline, si(p.Rate), mode)
		r, err := resumeOnce(ctx, px, p, mode)
		if err != nil {
			if ctx.Err() != nil {
				return out, err
			}
			r.Err = err.Error()
		}
		out = append(out, r)
	}
	return out, nil
}

func resumeOnce(ctx context.Context, px *tcpproxy.Proxy, p ResumeParams, mode string) (ResumeResult, error) {
	r := ResumeResult{Mode: mode, Keys: p.Keys, Rate: p.Rate, Offline: Dur(p.Offline)}
	opts := quietClient(px.Endpoint())
	opts.NoResume = mode == "full"
	dctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c, err := client.Dial(dctx, opts)
	if err != nil {
		return r, fmt.Errorf("resume %s: first join: %w", mode, err)
	}
	defer c.Close()
	time.Sleep(time.Second) // following the stream for a while
	before := c.Seq()
	px.Cut()
	time.Sleep(p.Offline)
	px.Restore()
	restored := time.Now()
	for {
		st := c.Stats()
		if st.Joins >= 2 && st.Synced {
			r.Restore = Dur(time.Since(restored))
			lj := st.LastJoin
			r.Kind, r.Rejoin, r.Connect, r.Messages, r.Bytes, r.Missed = lj.Kind, Dur(lj.Took), Dur(lj.Connect), lj.Messages, lj.Bytes, lj.Seq-before
			return r, nil
		}
		if time.Since(restored) > 3*time.Minute || ctx.Err() != nil {
			return r, fmt.Errorf("resume %s: not in sync 3 minutes after the network came back: %+v", mode, st)
		}
		time.Sleep(time.Millisecond)
	}
}

// resumeHerd follows a durable server with HerdClients clients, restarts
// it on its data directory and waits until every client is back in sync.
func resumeHerd(ctx context.Context, l Launcher, p ResumeParams, prog *Progress) (res ResumeHerdResult, err error) {
	res = ResumeHerdResult{Clients: p.HerdClients, Keys: p.HerdKeys}
	dir, err := os.MkdirTemp("", "clonebench-resume-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	impl := ImplDurable + "=" + dir
	prog.Step("resume herd: preloading %d keys into a durable server", p.HerdKeys)
	t, err := l.Launch(ctx, impl)
	if err != nil {
		return res, err
	}
	stopped := false
	defer func() {
		if !stopped {
			err = errors.Join(err, t.Stop())
		}
	}()
	zctx, err := newZctx(64)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, zctx.Term()) }()
	m := &mapRig{target: t, zctx: zctx, clk: newClock(), p: MapParams{Loaders: 4}, buckets: 1}
	if _, err := m.load(ctx, p.HerdKeys); err != nil {
		return res, err
	}
	px, err := tcpproxy.Start(t.Port)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, px.Close()) }()

	prog.Step("resume herd: %d clients join", p.HerdClients)
	clients := make([]*client.Client, p.HerdClients)
	errs := make([]error, p.HerdClients)
	var wg sync.WaitGroup
	dctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	for i := range clients {
		wg.Go(func() { clients[i], errs[i] = client.Dial(dctx, quietClient(px.Endpoint())) })
	}
	wg.Wait()
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	if err := errors.Join(errs...); err != nil {
		return res, fmt.Errorf("resume herd: joins: %w", err)
	}
	res.FullBytes = clients[0].Stats().LastJoin.Bytes * int64(p.HerdClients)

	prog.Step("resume herd: restarting the server under %d clients", p.HerdClients)
	down := time.Now()
	stopped = true
	if err := t.Stop(); err != nil {
		return res, fmt.Errorf("resume herd: stop: %w", err)
	}
	t, err = l.Launch(ctx, impl)
	if err != nil {
		return res, fmt.Errorf("resume herd: restart: %w", err)
	}
	stopped = false
	px.Retarget(t.Port)
	up := time.Now()
	res.Restart = Dur(up.Sub(down))
	for {
		back := 0
		for _, c := range clients {
			if st := c.Stats(); st.Joins >= 2 && st.Synced {
				back++
			}
		}
		if back == len(clients) {
			break
		}
		if time.Since(up) > 5*time.Minute || ctx.Err() != nil {
			return res, fmt.Errorf("resume herd: %d of %d clients back in sync 5 minutes after the restart", back, len(clients))
		}
		time.Sleep(5 * time.Millisecond)
	}
	res.AllBack = Dur(time.Since(up))
	for _, c := range clients {
		st := c.Stats()
		if st.FullResyncs > 0 {
			res.Full++
		} else if st.Resumes > 0 {
			res.Resumed++
		}
		res.Resumes += st.Resumes
		res.Messages += st.RejoinMessages
		res.Bytes += st.RejoinBytes
	}
	return res, nil
}

// resumeTables renders the resume case.
func resumeTables(r *ResumeReport) []Table {
	if r == nil || len(r.Outage) == 0 {
		return nil
	}
	t := Table{Header: []string{"metric", "resume", "full snapshot", "ratio", "target"}}
	var res, full ResumeResult
	for _, o := range r.Outage {
		if o.Mode == "resume" {
			res = o
		} else {
			full = o
		}
	}
	t.Title = fmt.Sprintf("resume: a client of %d keys offline for %v while %s updates/s stream (clonekv client over a cut TCP proxy)", res.Keys, res.Offline, si(res.Rate))
	t.Rows = [][]string{
		{"re-join was", res.Kind, full.Kind, "", ""},
		{"updates missed", fmt.Sprint(res.Missed), fmt.Sprint(full.Missed), "", ""},
		{"re-join: request → in sync", res.Rejoin.String(), full.Rejoin.String(), ratio(ms(res.Rejoin), ms(full.Rejoin)), verdict("resume < 100ms", res.Kind == "delta" && res.Rejoin < Dur(100*time.Millisecond))},
		{"re-join: start → request (connecting)", res.Connect.String(), full.Connect.String(), "", ""},
		{"network back → in sync", res.Restore.String(), full.Restore.String(), ratio(ms(res.Restore), ms(full.Restore)), ""},
		{"messages received", fmt.Sprint(res.Messages), fmt.Sprint(full.Messages), ratio(float64(res.Messages), float64(full.Messages)), ""},
		{"bytes received", fmt.Sprint(res.Bytes), fmt.Sprint(full.Bytes), ratio(float64(res.Bytes), float64(full.Bytes)),
			verdict("< 5% of full", full.Bytes > 0 && res.Bytes*20 < full.Bytes)},
	}
	for _, o := range r.Outage {
		if o.Err != "" {
			t.Notes = append(t.Notes, o.Mode+": "+o.Err)
		}
	}
	ts := []Table{t}
	if h := r.Herd; h != nil {
		ht := Table{
			Title:  fmt.Sprintf("resume herd: %d clients of %d keys across a durable server restart", h.Clients, h.Keys),
			Header: []string{"metric", "value", "target"},
			Rows: [][]string{
				{"server stopped → serving again", h.Restart.String(), ""},
				{"serving → every client in sync", h.AllBack.String(), ""},
				{"clients that resumed / got a whole snapshot", fmt.Sprintf("%d / %d (%d resumes)", h.Resumed, h.Full, h.Resumes), verdict("all resume", h.Resumed == h.Clients)},
				{"re-join messages (all clients)", fmt.Sprint(h.Messages), ""},
				{"re-join bytes (all clients)", fmt.Sprintf("%d (whole snapshots: %d)", h.Bytes, h.FullBytes), ""},
			},
		}
		if h.Err != "" {
			ht.Notes = append(ht.Notes, h.Err)
		}
		ts = append(ts, ht)
	}
	return ts
}
