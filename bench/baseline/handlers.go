package baseline

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// handleSnapshot answers one snapshot request, as the seed's s_snapshots:
// every stored key under the subtree (a full walk of the map, unpaced), then
// KTHXBAI with the current sequence and the subtree as body.
func (s *Server) handleSnapshot() error {
	frames, _, err := transport.RecvMessage(s.snapshot, 0, s.frames)
	if err != nil {
		return fmt.Errorf("baseline: receive snapshot request: %w", err)
	}
	if len(frames) != 3 || string(frames[1]) != kvmsg.CmdSnapshot {
		s.badMsgs.Add(1)
		s.log.Debug("ignoring bad snapshot request", "frames", len(frames))
		return nil
	}
	identity, subtree := frames[0], string(frames[2])
	out := make([][]byte, 0, kvmsg.NumFrames+1) // identity, then the message
	for key, m := range s.kvmap {
		if strings.HasPrefix(key, subtree) {
			out = append(append(out[:0], identity), m.Frames()...)
			if err := transport.SendMessage(s.snapshot, out, 0); err != nil {
				return fmt.Errorf("baseline: send KVSYNC %q: %w", key, err)
			}
		}
	}
	end := kvmsg.Msg{Key: []byte(kvmsg.KeySnapshotEnd), Seq: s.sequence, Body: frames[2]}
	// Counted before KTHXBAI goes out, so a client that has its KTHXBAI sees
	// its snapshot in Stats (the tests read Stats right after it).
	s.snapshots.Add(1)
	if err := transport.SendMessage(s.snapshot, append(append(out[:0], identity), end.Frames()...), 0); err != nil {
		return fmt.Errorf("baseline: send KTHXBAI: %w", err)
	}
	s.log.Debug("sent snapshot", "sequence", s.sequence, "subtree", subtree)
	return nil
}

// handleCollector sequences, publishes and stores one client update, as the
// seed's s_collector.
func (s *Server) handleCollector() error {
	frames, _, err := transport.RecvMessage(s.collector, 0, s.frames)
	if err != nil {
		return fmt.Errorf("baseline: receive update: %w", err)
	}
	m, err := kvmsg.Decode(frames, kvmsg.DefaultLimits)
	if err != nil {
		s.badMsgs.Add(1)
		s.log.Debug("ignoring bad update", "err", err)
		return nil
	}
	s.sequence++
	m.Seq = s.sequence
	s.updates.Add(1) // before publishing: a subscriber that has it sees it counted
	if err := transport.SendMessage(s.publisher, m.Frames(), 0); err != nil {
		return fmt.Errorf("baseline: publish update %d: %w", m.Seq, err)
	}
	if ttl, err := m.TTL(); err == nil && ttl > 0 {
		expiry := time.Now().UnixMilli() + ttl.Milliseconds()
		m = m.SetProp(kvmsg.PropTTL, strconv.FormatInt(expiry, 10))
	}
	s.store(m)
	return nil
}

// store applies m to the map as kvmsg_store does: an empty body deletes.
func (s *Server) store(m kvmsg.Msg) {
	if m.IsDelete() {
		delete(s.kvmap, string(m.Key))
		return
	}
	s.kvmap[string(m.Key)] = m
}

// flushTTL is the seed's s_flush_ttl: scan every key, parse its absolute
// expiry, and publish and remove each one that has passed.
func (s *Server) flushTTL(now time.Time) error {
	nowMs := now.UnixMilli()
	for key, m := range s.kvmap {
		raw, ok := kvmsg.LookupProp(m.Props, kvmsg.PropTTL)
		if !ok {
			continue
		}
		expiry, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil || expiry == 0 || nowMs < expiry {
			continue
		}
		s.sequence++
		m.Seq = s.sequence
		m.Body = nil
		s.expired.Add(1)
		if err := transport.SendMessage(s.publisher, m.Frames(), 0); err != nil {
			return fmt.Errorf("baseline: publish delete %q: %w", key, err)
		}
		delete(s.kvmap, key)
	}
	return nil
}
