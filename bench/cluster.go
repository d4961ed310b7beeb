package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/client"
	"github.com/clonekv/clonekv/internal/freeport"
	"github.com/clonekv/clonekv/kvmsg"
	"github.com/clonekv/clonekv/transport"
)

// The cluster case's server setups, all clonesrv processes.
const (
	SetupCluster = "cluster-3" // three nodes on one raft log, on this machine
	SetupDurable = "durable"   // one node on a data directory
	SetupMemory  = "memory"    // one node, --memory
)

// ClusterParams are the knobs of the cluster case (issue 13): three nodes
// vs one durable node vs --memory, each a clonesrv process.
type ClusterParams struct {
	// Clonesrv is the clonesrv binary (cmd/clonebench --clonesrv).
	Clonesrv string
	Setups   []string
	Case     UpdatesCase // the writer's shape (Pubs, Body, Keys); one subscriber per node, whatever Subs says
	Runs     int         // lossless searches per writer placement
	// Trial is one paced trial's length in the search; Latency the length
	// of the latency run at LatRate.
	Trial, Latency     time.Duration
	StartRate, MaxRate float64
	LatRate            float64
	Kills              int           // kill -9 of the leader, each measured
	FailoverRate       float64       // updates/s the failover writer sends to the survivors
	FailoverWait       time.Duration // bound on one failover measurement
	Budget             time.Duration // for the searches of one setup
	ClientHeartbeat    time.Duration // the following client's HeartbeatTimeout
	NodeHugz           time.Duration // the nodes' --hugz
	NodeReady          time.Duration // bound on a node's start, and on agreeing on a leader
	Debug              io.Writer     // if set, one line per trial
}

// ClusterResult is one setup's figures.
type ClusterResult struct {
	Setup string `json:"setup"`
	// Lossless paced rates (median of Runs) with the writer on the leader
	// and on a follower (single nodes: on the node), every node's
	// subscriber receiving every update.
	LeaderRate     float64   `json:"lossless_writer_on_leader"`
	LeaderRuns     []float64 `json:"lossless_writer_on_leader_runs"`
	FollowerRate   float64   `json:"lossless_writer_on_follower,omitempty"`
	FollowerRuns   []float64 `json:"lossless_writer_on_follower_runs,omitempty"`
	LatRate        float64   `json:"latency_rate"`
	LeaderSubP50   Dur       `json:"leader_sub_p50"`
	LeaderSubP99   Dur       `json:"leader_sub_p99"`
	FollowSubP50   Dur       `json:"follower_sub_p50,omitempty"`
	FollowSubP99   Dur       `json:"follower_sub_p99,omitempty"`
	LatLost        int64     `json:"latency_lost"`
	FollowWriteP99 Dur       `json:"writer_on_follower_p99,omitempty"` // same rate, writer on a follower, the leader's subscriber
	// Failover (three nodes only): kill -9 of the leader to the first
	// update the new leader published, and a client following the killed
	// node to following another node again.
	Failover    []Dur    `json:"failover_to_first_publish,omitempty"`
	ClientMoved []Dur    `json:"client_follows_again,omitempty"`
	Notes       []string `json:"notes,omitempty"`
}

func runCluster(ctx context.Context, p ClusterParams, prog *Progress) ([]ClusterResult, error) {
	if p.Clonesrv == "" {
		return nil, errors.New("cluster: no clonesrv binary (clonebench --clonesrv)")
	}
	if _, err := os.Stat(p.Clonesrv); err != nil {
		return nil, fmt.Errorf("cluster: clonesrv binary: %w (make bench builds it into bin/)", err)
	}
	var out []ClusterResult
	for _, setup := range p.Setups {
		res, err := clusterOne(ctx, p, setup, prog)
		if err != nil {
			if ctx.Err() != nil {
				return out, err
			}
			res.Notes = append(res.Notes, "error: "+err.Error())
		}
		out = append(out, res)
	}
	return out, nil
}

// benchNode is one clonesrv process of a setup.
type benchNode struct {
	name           string
	port, httpPort int
	raftPort       int
	dir            string
	args           []string
	cmd            *exec.Cmd
	done           chan error
}

func (n *benchNode) target(setup string) *Target {
	return &Target{Impl: setup + "/" + n.name, Port: n.port, PID: n.cmd.Process.Pid, stop: n.stop,
		gc: func() (GCSample, error) { return GCSample{}, errors.New("not measured") }}
}

func (n *benchNode) start(bin string, ready time.Duration) error {
	n.cmd = exec.Command(bin, n.args...)
	n.cmd.Stdout, n.cmd.Stderr = nil, nil // quiet at warn, and nobody reads it
	if err := n.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", n.name, err)
	}
	n.done = make(chan error, 1)
	go func() { n.done <- n.cmd.Wait() }() // owner: this process
	deadline := time.Now().Add(ready)
	for {
		if code, _, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/healthz", n.httpPort), time.Second); err == nil && code == 200 {
			return nil
		}
		select {
		case err := <-n.done:
			n.done <- err
			return fmt.Errorf("%s exited before serving: %v", n.name, err)
		default:
		}
		if time.Now().After(deadline) {
			_ = n.kill()
			return fmt.Errorf("%s not serving within %v", n.name, ready)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (n *benchNode) kill() error {
	if n.cmd == nil {
		return nil
	}
	_ = n.cmd.Process.Kill()
	<-n.done
	n.cmd = nil
	return nil
}

func (n *benchNode) stop() error {
	if n.cmd == nil {
		return nil
	}
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.done
	}
	n.cmd = nil
	return nil
}

// benchSetup is one setup's running nodes.
type benchSetup struct {
	name  string
	nodes []*benchNode
	tmp   string
}

func (s *benchSetup) close() error {
	for _, n := range s.nodes {
		_ = n.stop()
	}
	return os.RemoveAll(s.tmp)
}

// launchSetup starts the setup's nodes on free 127.0.0.1 ports and, for a
// cluster, waits for a leader.
func launchSetup(p ClusterParams, setup string) (*benchSetup, error) {
	tmp, err := os.MkdirTemp("", "clonebench-cluster-")
	if err != nil {
		return nil, err
	}
	s := &benchSetup{name: setup, tmp: tmp}
	count := 1
	if setup == SetupCluster {
		count = 3
	}
	bases, err := freeport.Runs(count, 5)
	if err != nil {
		return nil, errors.Join(err, s.close())
	}
	var spec []string
	for i, b := range bases {
		n := &benchNode{name: fmt.Sprintf("n%d", i+1), port: b, raftPort: b + 3, httpPort: b + 4, dir: filepath.Join(tmp, fmt.Sprint(i+1))}
		s.nodes = append(s.nodes, n)
		spec = append(spec, fmt.Sprintf("%s=127.0.0.1:%d/%d", n.name, n.raftPort, n.port))
	}
	for _, n := range s.nodes {
		n.args = []string{"--bind", "127.0.0.1", "--port", fmt.Sprint(n.port), "--http", fmt.Sprintf("127.0.0.1:%d", n.httpPort),
			"--hugz", p.NodeHugz.String(), "--log-level", "warn", "--pub-hwm", "1000000"}
		switch setup {
		case SetupMemory:
			n.args = append(n.args, "--memory")
		case SetupDurable:
			n.args = append(n.args, "--data-dir", n.dir)
		case SetupCluster:
			n.args = append(n.args, "--data-dir", n.dir, "--node", n.name, "--cluster", strings.Join(spec, ","))
		default:
			return nil, errors.Join(fmt.Errorf("cluster: unknown setup %q", setup), s.close())
		}
	}
	// A cluster's nodes wait for each other: start them all, then wait.
	errs := make(chan error, len(s.nodes))
	for _, n := range s.nodes {
		go func() { errs <- n.start(p.Clonesrv, p.NodeReady) }()
	}
	var startErr error
	for range s.nodes {
		startErr = errors.Join(startErr, <-errs)
	}
	if startErr != nil {
		return nil, errors.Join(startErr, s.close())
	}
	if setup == SetupCluster {
		if _, err := s.leader(p.NodeReady); err != nil {
			return nil, errors.Join(err, s.close())
		}
	}
	return s, nil
}

// leader waits until the running nodes agree on a leader and returns it.
func (s *benchSetup) leader(d time.Duration) (*benchNode, error) {
	if len(s.nodes) == 1 {
		return s.nodes[0], nil
	}
	deadline := time.Now().Add(d)
	var why error
	for time.Now().Before(deadline) {
		var leaders []*benchNode
		agree := true
		var named string
		for _, n := range s.nodes {
			if n.cmd == nil {
				continue
			}
			st, err := fetchClusterStatus(n.httpPort)
			if err != nil {
				agree, why = false, err
				break
			}
			if st.Role == "leader" {
				leaders = append(leaders, n)
			}
			if named == "" {
				named = st.Leader
			}
			agree = agree && st.Leader != "" && st.Leader == named
		}
		if agree && len(leaders) == 1 && leaders[0].name == named {
			return leaders[0], nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, fmt.Errorf("no agreed leader within %v (%v)", d, why)
}

func clusterOne(ctx context.Context, p ClusterParams, setup string, prog *Progress) (res ClusterResult, err error) {
	res = ClusterResult{Setup: setup, LatRate: p.LatRate}
	prog.Step("cluster %s: starting", setup)
	s, err := launchSetup(p, setup)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, s.close()) }()
	zctx, err := newZctx(64)
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, zctx.Term()) }()
	l, err := s.leader(p.NodeReady)
	if err != nil {
		return res, err
	}
	var follower *benchNode
	for _, n := range s.nodes {
		if n != l {
			follower = n
			break
		}
	}
	subCtx, cancel := context.WithCancel(ctx)
	clk := newClock()
	// One subscriber per node, the leader's first.
	var subs []*subscriber
	order := append([]*benchNode{l}, nonLeaders(s.nodes, l)...)
	defer func() {
		cancel()
		for _, sb := range subs {
			<-sb.done
		}
	}()
	for _, n := range order {
		sb, err := startSubscriber(subCtx, zctx, n.port, clk, []string{""}, nil)
		if err != nil {
			return res, err
		}
		subs = append(subs, sb)
	}
	rigOn := func(n *benchNode) *rig {
		return &rig{target: n.target(setup), zctx: zctx, clk: clk, subs: subs, ctx: subCtx, cancel: cancel, noUUID: true}
	}
	lr := rigOn(l)
	if err := lr.warmup(ctx, "/probe", 10*time.Second); err != nil {
		return res, err
	}
	keys := makeKeys("/c/", p.Case.Keys)
	search := func(r *rig, where string, deadline time.Time) ([]float64, error) {
		var runs []float64
		start, factor, bisect := p.StartRate, 2.0, 4
		for run := range p.Runs {
			if run > 0 && runs[run-1] > 0 {
				start, factor, bisect = runs[run-1], 1.25, 2
			}
			try := func(rate float64) (bool, error) {
				prog.Step("cluster %s: writer on %s, lossless trial at %s/s", setup, where, si(rate))
				o, err := r.trial(ctx, p.Case, keys, rate, p.Trial)
				if p.Debug != nil {
					fmt.Fprintf(p.Debug, "trial %s writer on %s offered %.0f achieved %.0f sent %d minRecv %d lost %d ok %v err %v\n", setup, where, rate, o.achieved, o.sent, o.minRecv, o.lost, o.ok(), err)
				}
				return o.ok(), err
			}
			runEnd := time.Now().Add(time.Until(deadline) / time.Duration(p.Runs-run))
			best, _, err := searchZeroLoss(try, start, factor, p.MaxRate, bisect, 12, runEnd)
			if err != nil {
				return runs, err
			}
			runs = append(runs, best)
		}
		return runs, nil
	}
	share := p.Budget
	if follower != nil {
		share /= 2
	}
	if res.LeaderRuns, err = search(lr, "the leader", time.Now().Add(share)); err != nil {
		return res, err
	}
	res.LeaderRate = median(res.LeaderRuns)
	if follower != nil {
		fr := rigOn(follower)
		if res.FollowerRuns, err = search(fr, "a follower", time.Now().Add(share)); err != nil {
			return res, err
		}
		res.FollowerRate = median(res.FollowerRuns)
	}

	// Latency: one run per subscriber measured (trial merges the
	// histograms of the rig's subscribers), the others receiving too.
	latOn := func(writer *benchNode, sub int, what string) (*Hist, int64, error) {
		prog.Step("cluster %s: latency at %s/s, writer on %s", setup, si(p.LatRate), what)
		r := rigOn(writer)
		r.subs = subs[sub : sub+1]
		o, err := r.trial(ctx, p.Case, keys, p.LatRate, p.Latency)
		return o.hist, int64(o.sent) - o.sumRecv + o.lost, err
	}
	h, lost, err := latOn(l, 0, "the leader (leader's subscriber)")
	if err != nil {
		return res, err
	}
	res.LeaderSubP50, res.LeaderSubP99, res.LatLost = Dur(h.Quantile(0.5)), Dur(h.Quantile(0.99)), lost
	if follower != nil {
		if h, lost, err = latOn(l, 1, "the leader (a follower's subscriber)"); err != nil {
			return res, err
		}
		res.FollowSubP50, res.FollowSubP99, res.LatLost = Dur(h.Quantile(0.5)), Dur(h.Quantile(0.99)), res.LatLost+lost
		if h, lost, err = latOn(follower, 0, "a follower (leader's subscriber)"); err != nil {
			return res, err
		}
		res.FollowWriteP99, res.LatLost = Dur(h.Quantile(0.99)), res.LatLost+lost
	}
	if setup != SetupCluster {
		return res, nil
	}
	cancel() // the subscribers: the failover runs its own
	for _, sb := range subs {
		<-sb.done
	}
	subs = nil
	for k := range p.Kills {
		prog.Step("cluster %s: kill -9 of the leader (%d of %d)", setup, k+1, p.Kills)
		fo, moved, err := measureFailover(ctx, zctx, p, s, fmt.Sprintf("/failover/%d/", k))
		if err != nil {
			res.Notes = append(res.Notes, fmt.Sprintf("failover %d: %v", k+1, err))
			continue
		}
		res.Failover = append(res.Failover, Dur(fo))
		if moved > 0 {
			res.ClientMoved = append(res.ClientMoved, Dur(moved))
		}
	}
	return res, nil
}

func nonLeaders(ns []*benchNode, l *benchNode) []*benchNode {
	var out []*benchNode
	for _, n := range ns {
		if n != l {
			out = append(out, n)
		}
	}
	return out
}

// measureFailover kills the leader with SIGKILL while a client follows it,
// and measures (1) the time to the first update the new leader published:
// a writer sends marker updates (keys under prefix, new for each
// measurement) only to the survivors from the kill on, so only a leader
// elected after it can have committed them; and (2) the time
// until the client follows another node again. It then restarts the
// killed node and waits for an agreed leader.
func measureFailover(ctx context.Context, zctx *zmq.Context, p ClusterParams, s *benchSetup, prefix string) (failover, moved time.Duration, err error) {
	l, err := s.leader(p.NodeReady)
	if err != nil {
		return 0, 0, err
	}
	survivors := nonLeaders(s.nodes, l)
	eps := []string{endpoint(l.port)}
	for _, n := range survivors {
		eps = append(eps, endpoint(n.port))
	}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	c, err := client.Dial(dctx, client.Options{Endpoints: eps, HeartbeatTimeout: p.ClientHeartbeat, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return 0, 0, fmt.Errorf("client: %w", err)
	}
	defer c.Close()
	// A subscriber on each survivor waits for a marker.
	var first atomic.Int64 // clock time of the first marker seen, +1
	clk := newClock()
	subCtx, cancel := context.WithCancel(ctx)
	var subs []*subscriber
	defer func() {
		cancel()
		for _, sb := range subs {
			<-sb.done
		}
	}()
	for _, n := range survivors {
		sb, err := startSubscriber(subCtx, zctx, n.port, clk, []string{prefix}, func(_, _ []byte, _ int64, now time.Duration) {
			first.CompareAndSwap(0, int64(now)+1)
		})
		if err != nil {
			return 0, 0, err
		}
		subs = append(subs, sb)
	}
	time.Sleep(200 * time.Millisecond) // the SUBs' subscriptions reach the nodes (markers start after the kill anyway)
	if st := c.Stats(); st.Server != eps[0] {
		return 0, 0, fmt.Errorf("client follows %s, not the leader %s", st.Server, eps[0])
	}
	var pushes []*zmq.Socket
	defer func() {
		for _, s := range pushes {
			s.Close()
		}
	}()
	for _, n := range survivors {
		ps, err := transport.Connect(zctx, zmq.PUSH, endpoint(n.port+2), transport.Options{SndHWM: 100000})
		if err != nil {
			return 0, 0, err
		}
		pushes = append(pushes, ps)
	}
	joins0 := c.Stats().Joins
	killedAt := clk.now()
	_ = l.kill()
	every := time.Duration(float64(time.Second) / p.FailoverRate)
	deadline := time.Now().Add(p.FailoverWait)
	for i := 0; first.Load() == 0 || moved == 0; i++ {
		if time.Now().After(deadline) {
			if first.Load() == 0 {
				return 0, 0, fmt.Errorf("no update published by a new leader within %v of kill -9", p.FailoverWait)
			}
			break
		}
		m := kvmsg.Msg{Key: fmt.Appendf(nil, "%s%d", prefix, i%100), Body: []byte("f")}
		_ = transport.SendMessage(pushes[i%len(pushes)], m.Frames(), zmq.DONTWAIT)
		if st := c.Stats(); moved == 0 && st.Synced && st.Server != eps[0] && st.Joins > joins0 {
			moved = clk.now() - killedAt
		}
		time.Sleep(every)
	}
	failover = time.Duration(first.Load()-1) - killedAt
	if err := l.start(p.Clonesrv, p.NodeReady); err != nil {
		return failover, moved, err
	}
	if _, err := s.leader(p.NodeReady); err != nil {
		return failover, moved, err
	}
	return failover, moved, nil
}

// clusterTables renders the case: cluster | durable | memory.
func clusterTables(rs []ClusterResult) []Table {
	if len(rs) == 0 {
		return nil
	}
	get := func(name string) ClusterResult {
		x, _ := find(rs, func(x ClusterResult) string { return x.Setup }, name)
		return x
	}
	c, d, m := get(SetupCluster), get(SetupDurable), get(SetupMemory)
	t := Table{
		Title:  "cluster: three nodes on this machine vs one durable node vs --memory (clonesrv processes; one writer, a subscriber on every node)",
		Header: []string{"metric", "cluster-3", "durable", "memory", "cluster/durable", "target"},
	}
	runs := func(v []float64) string {
		var s []string
		for _, x := range v {
			s = append(s, si(x))
		}
		return strings.Join(s, " ")
	}
	dash := func(v float64) string {
		if v == 0 {
			return "–"
		}
		return si(v)
	}
	dd := func(v Dur) string {
		if v == 0 {
			return "–"
		}
		return v.String()
	}
	medDur := func(v []Dur) (Dur, Dur) {
		var ds []time.Duration
		var worst Dur
		for _, x := range v {
			ds = append(ds, time.Duration(x))
			worst = max(worst, x)
		}
		if len(ds) == 0 {
			return 0, 0
		}
		return Dur(medianDur(ds)), worst
	}
	t.Rows = append(t.Rows,
		[]string{"lossless updates/s, writer on the leader (median)", si(c.LeaderRate), si(d.LeaderRate), si(m.LeaderRate), ratio(c.LeaderRate, d.LeaderRate), ""},
		[]string{"  runs", runs(c.LeaderRuns), runs(d.LeaderRuns), runs(m.LeaderRuns), "", ""},
		[]string{"lossless updates/s, writer on a follower (median)", dash(c.FollowerRate), "–", "–", ratio(c.FollowerRate, d.LeaderRate), ""},
		[]string{fmt.Sprintf("latency at %s/s, leader's subscriber p50", si(c.LatRate)), dd(c.LeaderSubP50), dd(d.LeaderSubP50), dd(m.LeaderSubP50), ratio(ms(c.LeaderSubP50), ms(d.LeaderSubP50)), ""},
		[]string{"  leader's subscriber p99", dd(c.LeaderSubP99), dd(d.LeaderSubP99), dd(m.LeaderSubP99), ratio(ms(c.LeaderSubP99), ms(d.LeaderSubP99)), ""},
		[]string{"  a follower's subscriber p50", dd(c.FollowSubP50), "–", "–", "", ""},
		[]string{"  a follower's subscriber p99", dd(c.FollowSubP99), "–", "–", "", ""},
		[]string{"  writer on a follower, leader's subscriber p99", dd(c.FollowWriteP99), "–", "–", "", ""},
	)
	fo, foWorst := medDur(c.Failover)
	cm, cmWorst := medDur(c.ClientMoved)
	t.Rows = append(t.Rows,
		[]string{fmt.Sprintf("kill -9 leader → first update by the new leader (median, worst of %d)", len(c.Failover)),
			fmt.Sprintf("%s (worst %s)", dd(fo), dd(foWorst)), "–", "–", "", verdict("< 3 s", fo > 0 && time.Duration(foWorst) < 3*time.Second)},
		[]string{fmt.Sprintf("client following the killed leader → following another node (median, worst of %d)", len(c.ClientMoved)),
			fmt.Sprintf("%s (worst %s)", dd(cm), dd(cmWorst)), "–", "–", "", ""},
	)
	for _, r := range rs {
		for _, n := range r.Notes {
			t.Notes = append(t.Notes, r.Setup+": "+n)
		}
	}
	t.Notes = append(t.Notes, "all three nodes share this machine's CPUs and disk: a real cluster puts each on its own",
		"lossless: every subscriber (one per node) received every update of a paced trial, in sequence")
	return []Table{t}
}
