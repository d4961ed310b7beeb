package main

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/clonekv/clonekv/client"
)

// cmdGet: get KEY. Joins with the subtree KEY (so the snapshot holds only
// KEY and keys it prefixes) and prints KEY's value.
func cmdGet(inv *invocation) error {
	asJSON := inv.Flags.Bool("json", false, "print a JSON object {key, value, seq}")
	args, err := inv.Parse(1, 1)
	if err != nil {
		return err
	}
	key := args[0]
	c, err := inv.Dial(key, client.FilterServer)
	if err != nil {
		return err
	}
	defer c.Close()
	snap := c.Snapshot()
	v, ok := snap.Get(key)
	if !ok {
		return &notFoundError{key}
	}
	if *asJSON {
		var seq int64
		snap.Range(key, func(k string, _ []byte, s int64) bool {
			if k == key {
				seq = s
			}
			return false
		})
		r := record{Key: key, Seq: seq}
		r.setValue(v)
		return writeJSON(inv.Stdout, r)
	}
	_, err = inv.Stdout.Write(append(v, '\n'))
	return err
}

// cmdSet: set KEY VALUE [--ttl D]. Waits until the server has sequenced and
// published the update, so a get that follows sees it.
func cmdSet(inv *invocation) error {
	ttl := inv.Flags.Duration("ttl", 0, "time to live (whole seconds, rounded up); 0 = never expires")
	args, err := inv.Parse(2, 2)
	if err != nil {
		return err
	}
	if *ttl < 0 {
		return &usageError{"--ttl must not be negative"}
	}
	if args[1] == "" {
		return &usageError{"set: empty VALUE (an empty value means delete: use del)"}
	}
	return writeAndConfirm(inv, args[0], func(ctx context.Context, c *client.Client) (int64, error) {
		return c.SetWait(ctx, args[0], []byte(args[1]), *ttl)
	})
}

// cmdDel: del KEY.
func cmdDel(inv *invocation) error {
	args, err := inv.Parse(1, 1)
	if err != nil {
		return err
	}
	return writeAndConfirm(inv, args[0], func(ctx context.Context, c *client.Client) (int64, error) {
		return c.DeleteWait(ctx, args[0])
	})
}

func writeAndConfirm(inv *invocation, key string, write func(context.Context, *client.Client) (int64, error)) error {
	c, err := inv.Dial(key, client.FilterServer)
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(inv.Ctx, inv.g.timeout)
	defer cancel()
	if _, err := write(ctx, c); err != nil {
		return err
	}
	return nil
}

// cmdWatch: watch [SUBTREE] [--json] [--since SEQ [--since-history ID]]
// [--stats D]. Prints events until interrupted; the first line is the
// join's resync-done, or with --since the changes after SEQ first.
func cmdWatch(inv *invocation) error {
	asJSON := inv.Flags.Bool("json", false, "print JSON lines")
	since := inv.Flags.Int64("since", 0, "first print what changed after sequence SEQ (a delta when the server retains it, else the snapshot's keys changed after SEQ), then follow")
	sinceHistory := inv.Flags.String("since-history", "", "with --since: the history id SEQ belongs to (default: the server's)")
	statsEvery := inv.Flags.Duration("stats", 0, "print the client's counters (joins, resumes, full re-syncs by reason, bytes) to stderr every interval; 0: never")
	args, err := inv.Parse(0, 1)
	if err != nil {
		return err
	}
	switch {
	case *since < 0:
		return &usageError{"--since must not be negative"}
	case *sinceHistory != "" && *since == 0:
		return &usageError{"--since-history needs --since"}
	case *statsEvery < 0:
		return &usageError{"--stats must not be negative"}
	}
	subtree := ""
	if len(args) == 1 {
		subtree = args[0]
	}
	var tick *ticker
	if *statsEvery > 0 {
		tick = &ticker{every: *statsEvery, fn: func(c *client.Client) { writeStats(inv.Stderr, c.Stats()) }}
	}
	return follow(inv, subtree, *asJSON, tick, sinceFrom{seq: *since, history: *sinceHistory})
}

// sinceFrom is watch --since: the first join asks for the changes after seq.
type sinceFrom struct {
	seq     int64
	history string
}

// follow joins subtree and prints every event until interrupted, calling
// tick (if any) from the same loop every interval. With since, the first
// join prints the changes after since.seq: the server's delta, or, when it
// sends a whole snapshot instead, that snapshot's keys set after since.seq
// (and a warning on stderr that deletes cannot be shown).
func follow(inv *invocation, subtree string, asJSON bool, tick *ticker, since sinceFrom) error {
	ctx, cancel := context.WithCancel(inv.Ctx)
	defer cancel()
	opts, err := inv.options(subtree, client.FilterLocal)
	if err != nil {
		return err
	}
	opts.Since, opts.SinceHistory = since.seq, since.history
	// Watching from the start: the join's resync-done is the first line.
	c, events, err := client.NewWatching(ctx, opts)
	if err != nil {
		return &usageError{err.Error()}
	}
	defer c.Close()
	if err := inv.waitSynced(c); err != nil {
		return err
	}
	var tc <-chan time.Time
	if tick != nil {
		t := time.NewTicker(tick.every)
		defer t.Stop()
		tc = t.C
	}
	first := since.seq > 0 // still in the --since join
	filter := false        // the --since join was answered with a whole snapshot
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return nil // interrupted
			}
			if first {
				switch ev.Type {
				case client.EventFull:
					filter = true
					fmt.Fprintf(inv.Stderr, "clonecli watch: the server sent a whole snapshot at %d, not the changes after %d (%s): "+
						"printing its keys set after %d; keys deleted after %d cannot be shown\n", ev.Seq, since.seq, fullWhy(ev.Reason), since.seq, since.seq)
				case client.EventUpdate:
					if filter && ev.Seq <= since.seq {
						continue
					}
				case client.EventResyncDone:
					first = false
				}
			}
			if err := writeEvent(inv.Stdout, ev, asJSON); err != nil {
				return fmt.Errorf("write: %w", err)
			}
		case <-tc:
			tick.fn(c)
		case <-inv.Ctx.Done():
			return nil
		}
	}
}

// fullWhy explains a full re-sync's reason word to a shell user.
func fullWhy(reason string) string {
	switch reason {
	case "compacted":
		return "compacted: it no longer retains the updates after that sequence"
	case "ahead":
		return "ahead: that sequence is above the server's own"
	case "history", "other_history":
		return reason + ": the sequence belongs to another history (the server's data was replaced)"
	case "not_offered":
		return "not_offered: this server does not offer resume"
	case "bad_request":
		return "bad_request: the server could not read the request"
	}
	return reason
}

type ticker struct {
	every time.Duration
	fn    func(*client.Client)
}

// cmdDump: dump [SUBTREE] [--json]. Prints the snapshot in key order.
func cmdDump(inv *invocation) error {
	asJSON := inv.Flags.Bool("json", false, "print JSON lines {key, value, seq}")
	args, err := inv.Parse(0, 1)
	if err != nil {
		return err
	}
	subtree := ""
	if len(args) == 1 {
		subtree = args[0]
	}
	c, err := inv.Dial(subtree, client.FilterServer)
	if err != nil {
		return err
	}
	defer c.Close()
	w := bufio.NewWriter(inv.Stdout)
	var werr error
	c.Snapshot().Range(subtree, func(k string, v []byte, seq int64) bool {
		if *asJSON {
			r := record{Key: k, Seq: seq}
			r.setValue(v)
			werr = writeJSON(w, r)
		} else {
			_, werr = fmt.Fprintf(w, "%s\t%s\n", text(k), text(string(v)))
		}
		return werr == nil
	})
	if werr != nil {
		return fmt.Errorf("write: %w", werr)
	}
	return w.Flush()
}

// cmdDemo: the seed's Model Five client. Every interval it sets
// SUBTREE+NNNN (random 0..9999) to a random number with a random ttl of
// 0..29 seconds, and prints every event it receives.
func cmdDemo(inv *invocation) error {
	subtree := inv.Flags.String("subtree", "/client/", "subtree to follow and write under")
	interval := inv.Flags.Duration("interval", time.Second, "time between two random updates")
	asJSON := inv.Flags.Bool("json", false, "print JSON lines")
	if _, err := inv.Parse(0, 0); err != nil {
		return err
	}
	if *interval <= 0 {
		return &usageError{"--interval must be positive"}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	return follow(inv, *subtree, *asJSON, &ticker{every: *interval, fn: func(c *client.Client) {
		key := *subtree + strconv.Itoa(rng.IntN(10000))
		value := strconv.Itoa(rng.IntN(1000000))
		ttl := time.Duration(rng.IntN(30)) * time.Second
		if err := c.Set(key, []byte(value), ttl); err != nil {
			inv.log.Warn("demo update not sent", "key", key, "err", err)
		}
	}}, sinceFrom{})
}
