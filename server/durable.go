package server

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/clonekv/clonekv/actors"
	"github.com/clonekv/clonekv/raftlog"
)

// LogConfig says where the server keeps its history (README "Durability").
// The zero value keeps the raft log in memory: the seed's volatile
// semantics, through the same code path.
type LogConfig struct {
	// DataDir holds the raft log and the FSM snapshots; empty: in memory.
	DataDir string
	// SnapshotInterval, SnapshotThreshold and TrailingLogs tune raft's FSM
	// snapshots (defaults 30s, 8192 entries, 10240 entries kept; in
	// memory 250ms, 1024 and 128: see raftlog.Config).
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// OpenTimeout bounds the start of the log: replaying it and electing
	// the node (default 5 minutes).
	OpenTimeout time.Duration
}

// openLog starts the raft node feeding the store and hands it to the
// proposer. It returns once every committed entry is in the store.
func (s *Server) openLog(root *actor.RootContext, p *pids) (*raftlog.Node, error) {
	timeout := s.cfg.Log.OpenTimeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	rc := raftlog.Config{
		Dir:               s.cfg.Log.DataDir,
		SnapshotInterval:  s.cfg.Log.SnapshotInterval,
		SnapshotThreshold: s.cfg.Log.SnapshotThreshold,
		TrailingLogs:      s.cfg.Log.TrailingLogs,
		Store:             &actors.StoreFeed{Root: root, Store: p.store},
		Stats:             s.stats,
		Logger:            s.log,
	}
	s.cfg.Cluster.raftConfig(&rc)
	node, err := raftlog.Open(ctx, rc)
	if err != nil {
		return nil, fmt.Errorf("open the log: %w", err)
	}
	root.Send(p.proposer, &actors.LogReady{Raft: node})
	s.tellLeadership(root, p, node)
	where := s.cfg.Log.DataDir
	if where == "" {
		where = "(memory)"
	}
	attrs := []any{"data_dir", where, "history", node.History(),
		"sequence", s.stats.Sequence.Load(), "keys", s.stats.Keys.Load(), "took", time.Since(start).Round(time.Millisecond)}
	if c := s.cfg.Cluster; c != nil {
		l := node.Leadership()
		attrs = append(attrs, "node", c.Node, "leader", l.ID, "term", l.Term)
	}
	s.log.Info("history open", attrs...)
	return node, nil
}

// drainLog waits until the proposer has nothing queued or in flight, then
// stops raft: every update accepted before the inputs stopped is then in
// the store's mailbox (or was refused by the log).
func (s *Server) drainLog(root *actor.RootContext, p *pids) {
	if p.proposer != nil {
		done := make(chan struct{})
		root.Send(p.proposer, &actors.Drain{Reply: done})
		select {
		case <-done:
		case <-s.hurry:
			s.log.Warn("shutdown deadline passed before the proposer drained")
		}
	}
	if p.node == nil {
		return
	}
	// Closing the log waits for raft's goroutines (and takes a final
	// snapshot); once hurried it gets little time for that.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.hurry:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := p.node.Close(ctx); err != nil {
		s.log.Warn("close the log", "err", err)
	}
}
