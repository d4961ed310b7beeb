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

// cmdWatch: watch [SUBTREE] [--json]. Prints events until interrupted; the
// first line is the join's resync-done.
func cmdWatch(inv *invocation) error {
	asJSON := inv.Flags.Bool("json", false, "print JSON lines")
	args, err := inv.Parse(0, 1)
	if err != nil {
		return err
	}
	subtree := ""
	if len(args) == 1 {
		subtree = args[0]
	}
	return follow(inv, subtree, *asJSON, nil)
}

// follow joins subtree and prints every event until interrupted, calling
// tick (if any) from the same loop every interval.
func follow(inv *invocation, subtree string, asJSON bool, tick *ticker) error {
	ctx, cancel := context.WithCancel(inv.Ctx)
	defer cancel()
	// Watching from the start: the join's resync-done is the first line.
	c, events, err := inv.newWatchingClient(ctx, subtree, client.FilterLocal)
	if err != nil {
		return err
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
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return nil // interrupted
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
	}})
}
