package raftlog

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// transportTimeout bounds one raft RPC's I/O (raft scales it up for a
// snapshot install). A stopped peer costs the leader that long on the
// connection to it only; the others go on.
const transportTimeout = 10 * time.Second

// watchedTransport is raft's TCP transport, watched for two figures that
// hashicorp/raft keeps to itself:
//
//   - on a follower, the leader's commit index (every AppendEntries request
//     carries it; the leader sends one at least every CommitTimeout), so a
//     follower knows how far behind the leader it is, not only how far
//     behind its own log;
//   - on the leader, each follower's last log index (every AppendEntries
//     answer carries it, heartbeats included: about every
//     HeartbeatTimeout/10), which is the per-peer replication lag.
//
// Requests pass through one goroutine on their way to raft (Consumer);
// heartbeats take raft's fast path around it, as before.
type watchedTransport struct {
	*raft.NetworkTransport
	out  chan raft.RPC
	stop chan struct{}
	done chan struct{}
	once sync.Once

	leaderCommit atomic.Uint64

	mu    sync.Mutex
	peers map[raft.ServerID]peerSeen
}

// peerSeen is what the leader last heard from a follower.
type peerSeen struct {
	lastIndex uint64
	at        time.Time
}

func newWatchedTransport(bind string, hl hclog.Logger) (*watchedTransport, error) {
	adv, err := net.ResolveTCPAddr("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft address %s: %w", bind, err)
	}
	nt, err := raft.NewTCPTransportWithLogger(bind, adv, 3, transportTimeout, hl)
	if err != nil {
		return nil, fmt.Errorf("raft transport on %s: %w", bind, err)
	}
	t := &watchedTransport{NetworkTransport: nt, out: make(chan raft.RPC), stop: make(chan struct{}), done: make(chan struct{}),
		peers: make(map[raft.ServerID]peerSeen)}
	go t.relay(nt.Consumer())
	return t, nil
}

// relay hands requests on to raft, noting the leader's commit index.
func (t *watchedTransport) relay(in <-chan raft.RPC) {
	defer close(t.done)
	for {
		select {
		case rpc := <-in:
			if ae, ok := rpc.Command.(*raft.AppendEntriesRequest); ok {
				for {
					cur := t.leaderCommit.Load()
					if ae.LeaderCommitIndex <= cur || t.leaderCommit.CompareAndSwap(cur, ae.LeaderCommitIndex) {
						break
					}
				}
			}
			select {
			case t.out <- rpc:
			case <-t.stop:
				return
			}
		case <-t.stop:
			return
		}
	}
}

// Consumer implements raft.Transport.
func (t *watchedTransport) Consumer() <-chan raft.RPC { return t.out }

// AppendEntries implements raft.Transport, noting the follower's last index.
func (t *watchedTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	err := t.NetworkTransport.AppendEntries(id, target, args, resp)
	if err == nil {
		t.mu.Lock()
		t.peers[id] = peerSeen{lastIndex: resp.LastLog, at: time.Now()}
		t.mu.Unlock()
	}
	return err
}

// seen returns what the leader last heard from peer id.
func (t *watchedTransport) seen(id string) (peerSeen, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, ok := t.peers[raft.ServerID(id)]
	return p, ok
}

// Close stops the relay and the transport (raft calls it at shutdown).
func (t *watchedTransport) Close() error {
	var err error
	t.once.Do(func() {
		close(t.stop)
		<-t.done
		err = t.NetworkTransport.Close()
	})
	return err
}
