package bench

import (
	"context"
	"fmt"
	"runtime"
	"time"

	zmq "github.com/pebbe/zmq4"
)

// Suite is what one run measures. Full and Quick are the standard ones.
type Suite struct {
	Name    string
	Cases   []string // subset of AllCases, in that order
	Updates UpdatesParams
	Map     MapParams
	Join    JoinParams
	Fanout  FanoutParams
	GCTail  GCTailParams
	Durable DurabilityParams
	Resume  ResumeParams
	Cluster ClusterParams
}

// AllCases are the case names, in the order they run. "snapshot" also
// measures memory per key and, on the same loaded server, "ttl".
var AllCases = []string{"updates", "snapshot", "join-under-load", "fanout", "gc-tail", "durability", "resume", "cluster"}

var (
	bothImpls  = []string{ImplBaseline, ImplClonekv}
	threeImpls = []string{ImplBaseline, ImplClonekv, ImplRelay}
	gcImpls    = []string{ImplClonekv, ImplClonekvGCOff}
	// durableImpls: baseline first (its zero-loss rate is the reference).
	durableImpls = []string{ImplBaseline, ImplClonekv, ImplDurable}
	// clusterSetups: the three nodes first (the figures that matter).
	clusterSetups = []string{SetupCluster, SetupDurable, SetupMemory}
)

// Full is `make bench`: every target of the benchmark issue, sized to run
// in about five minutes on two cores (gc-tail's two 1M-key servers take
// about one).
func Full() Suite {
	return Suite{
		Name:  "full",
		Cases: AllCases,
		Updates: UpdatesParams{
			Cases: []UpdatesCase{
				{Pubs: 1, Subs: 1, Body: 16, Keys: 1000},
				{Pubs: 4, Subs: 4, Body: 16, Keys: 1000},
				{Pubs: 1, Subs: 1, Body: 1024, Keys: 1000},
				{Pubs: 4, Subs: 4, Body: 1024, Keys: 1000},
			},
			Impls: threeImpls, Runs: 3,
			Trial: 400 * time.Millisecond, Latency: 600 * time.Millisecond, Unbounded: 800 * time.Millisecond,
			StartRate: 20000, MaxRate: 2e6, Fractions: []float64{0.1, 0.5, 0.9},
			Budget: 130 * time.Second,
		},
		Map: MapParams{
			Impls: bothImpls, Sizes: []int{10_000, 100_000, 1_000_000}, Joiners: 4, Runs: 3,
			SubtreeKeys: 1000, Loaders: 4, FirstWait: 20 * time.Second, Idle: 2 * time.Second,
			TTL: TTLParams{Quiet: 3 * time.Second, Keys: 10_000, Spread: 3, LatRate: 20_000},
		},
		Join:   JoinParams{Impls: bothImpls, Keys: 10_000, Pubs: 2, Rate: 10_000, Dur: 3 * time.Second, Joiners: 4},
		Fanout: FanoutParams{Impls: bothImpls, Subs: 1000, Groups: 8, Rate: 100, N: 300},
		GCTail: GCTailParams{Impls: gcImpls, Keys: 1_000_000, TTLEvery: 10, Loaders: 4, Snapshots: 3,
			Quiet: 3 * time.Second, Rate: 20_000, For: 10 * time.Second, HighRate: 100_000, HighFor: 3 * time.Second},
		Durable: DurabilityParams{
			Updates: UpdatesParams{
				Cases: []UpdatesCase{{Pubs: 1, Subs: 1, Body: 16, Keys: 1000}},
				Impls: durableImpls, Runs: 3,
				Trial: 400 * time.Millisecond, Latency: time.Second, Unbounded: 500 * time.Millisecond,
				StartRate: 20000, MaxRate: 2e6, Rates: []float64{20000},
				Budget: 60 * time.Second,
			},
			Keys: 1_000_000, Loaders: 4, Impls: durableImpls,
		},
		Resume: ResumeParams{Keys: 1_000_000, Rate: 10_000, Offline: 5 * time.Second, HerdClients: 300, HerdKeys: 20_000},
		Cluster: ClusterParams{
			Setups: clusterSetups, Case: UpdatesCase{Pubs: 1, Subs: 3, Body: 16, Keys: 1000}, Runs: 2,
			Trial: 400 * time.Millisecond, Latency: time.Second, StartRate: 20000, MaxRate: 1e6, LatRate: 20000,
			Kills: 3, FailoverRate: 1000, FailoverWait: 20 * time.Second, Budget: 16 * time.Second,
			ClientHeartbeat: time.Second, NodeHugz: 200 * time.Millisecond, NodeReady: 30 * time.Second,
		},
	}
}

// Quick is `make bench-quick`: every case, small, as a smoke test that the
// tool works (well under 45 s); its figures are not the benchmark's.
func Quick() Suite {
	return Suite{
		Name:  "quick",
		Cases: AllCases,
		Updates: UpdatesParams{
			Cases: []UpdatesCase{{Pubs: 1, Subs: 1, Body: 16, Keys: 100}},
			Impls: threeImpls, Runs: 1,
			Trial: 200 * time.Millisecond, Latency: 200 * time.Millisecond, Unbounded: 300 * time.Millisecond,
			StartRate: 20000, MaxRate: 2e6, Fractions: []float64{0.5},
			Budget: 9 * time.Second,
		},
		Map: MapParams{
			Impls: bothImpls, Sizes: []int{10_000}, Joiners: 2, Runs: 1,
			SubtreeKeys: 1000, Loaders: 2, FirstWait: 10 * time.Second, Idle: time.Second,
			TTL: TTLParams{Quiet: time.Second, Keys: 500, Spread: 1, LatRate: 500},
		},
		Join:   JoinParams{Impls: bothImpls, Keys: 1000, Pubs: 1, Rate: 2000, Dur: time.Second, Joiners: 2},
		Fanout: FanoutParams{Impls: bothImpls, Subs: 20, Groups: 2, Rate: 500, N: 200},
		GCTail: GCTailParams{Impls: gcImpls, Keys: 10_000, TTLEvery: 10, Loaders: 2, Snapshots: 1,
			Quiet: 200 * time.Millisecond, Rate: 2000, For: 500 * time.Millisecond, HighRate: 10_000, HighFor: 300 * time.Millisecond},
		Durable: DurabilityParams{
			Updates: UpdatesParams{
				Cases: []UpdatesCase{{Pubs: 1, Subs: 1, Body: 16, Keys: 100}},
				Impls: durableImpls, Runs: 1,
				Trial: 200 * time.Millisecond, Latency: 200 * time.Millisecond, Unbounded: 200 * time.Millisecond,
				StartRate: 20000, MaxRate: 2e6, Rates: []float64{2000},
				Budget: 4 * time.Second,
			},
			Keys: 10_000, Loaders: 2, Impls: durableImpls,
		},
		Resume: ResumeParams{Keys: 20_000, Rate: 2000, Offline: time.Second, HerdClients: 10, HerdKeys: 5000},
		Cluster: ClusterParams{
			Setups: clusterSetups, Case: UpdatesCase{Pubs: 1, Subs: 3, Body: 16, Keys: 100}, Runs: 1,
			Trial: 200 * time.Millisecond, Latency: 200 * time.Millisecond, StartRate: 20000, MaxRate: 1e6, LatRate: 2000,
			Kills: 1, FailoverRate: 1000, FailoverWait: 20 * time.Second, Budget: 2 * time.Second,
			ClientHeartbeat: time.Second, NodeHugz: 200 * time.Millisecond, NodeReady: 30 * time.Second,
		},
	}
}

// Machine describes where a run happened.
type Machine struct {
	Cores      int    `json:"cores"`
	GoMaxProcs int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	ZMQ        string `json:"libzmq"`
	OS         string `json:"os"`
}

// ThisMachine describes the running machine.
func ThisMachine() Machine {
	a, b, c := zmq.Version()
	return Machine{
		Cores: runtime.NumCPU(), GoMaxProcs: runtime.GOMAXPROCS(0), Go: runtime.Version(),
		ZMQ: fmt.Sprintf("%d.%d.%d", a, b, c), OS: runtime.GOOS + "/" + runtime.GOARCH,
	}
}

// Report is everything one run measured.
type Report struct {
	Suite    string            `json:"suite"`
	Command  string            `json:"command"`
	Machine  Machine           `json:"machine"`
	Started  time.Time         `json:"started"`
	Elapsed  Dur               `json:"elapsed"`
	Updates  []UpdatesResult   `json:"updates,omitempty"`
	Map      []MapResult       `json:"snapshot,omitempty"`
	JoinLoad []JoinLoadResult  `json:"join_under_load,omitempty"`
	Fanout   []FanoutResult    `json:"fanout,omitempty"`
	GCTail   []GCTailResult    `json:"gc_tail,omitempty"`
	Durable  *DurabilityReport `json:"durability,omitempty"`
	Resume   *ResumeReport     `json:"resume,omitempty"`
	Cluster  []ClusterResult   `json:"cluster,omitempty"`
}

// Run runs the suite's cases in order with servers from l.
func Run(ctx context.Context, s Suite, l Launcher, prog *Progress) (*Report, error) {
	rep := &Report{Suite: s.Name, Machine: ThisMachine(), Started: time.Now()}
	defer func() { rep.Elapsed = Dur(time.Since(rep.Started)) }()
	defer prog.Case("")
	for _, c := range s.Cases {
		prog.Case(c)
		var err error
		switch c {
		case "updates":
			rep.Updates, err = runUpdates(ctx, l, s.Updates, prog)
		case "snapshot":
			rep.Map, err = runMap(ctx, l, s.Map, prog)
		case "join-under-load":
			rep.JoinLoad, err = runJoinLoad(ctx, l, s.Join, prog)
		case "fanout":
			rep.Fanout, err = runFanout(ctx, l, s.Fanout, prog)
		case "gc-tail":
			rep.GCTail, err = runGCTail(ctx, l, s.GCTail, prog)
		case "durability":
			rep.Durable, err = runDurability(ctx, l, s.Durable, prog)
		case "resume":
			rep.Resume, err = runResume(ctx, l, s.Resume, prog)
		case "cluster":
			rep.Cluster, err = runCluster(ctx, s.Cluster, prog)
		default:
			err = fmt.Errorf("unknown case %q (want one of %v)", c, AllCases)
		}
		if err != nil {
			return rep, fmt.Errorf("case %s: %w", c, err)
		}
	}
	return rep, nil
}
