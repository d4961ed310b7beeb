package bench

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	zmq "github.com/pebbe/zmq4"

	"github.com/clonekv/clonekv/kvmsg"
)

// MapParams are the knobs of the map cases, which share one server per
// implementation because loading a million keys is the slow part: load
// sizes in turn and join at each (snapshot), measure memory per key, fetch
// a subtree, then measure the reaper (ttl).
type MapParams struct {
	Impls       []string
	Sizes       []int // ascending; the last is the "big" map
	Joiners     int   // concurrent joiners per size
	Runs        int   // single joins at the largest size (median reported)
	SubtreeKeys int   // keys per subtree at the largest size
	Loaders     int   // PUSH sockets loading keys in parallel
	FirstWait   time.Duration
	Idle        time.Duration // a joiner gives up when nothing arrives this long
	TTL         TTLParams
}

// TTLParams are the knobs of the ttl case.
type TTLParams struct {
	Quiet   time.Duration // window over which idle server CPU is read
	Keys    int           // keys given a ttl
	Spread  int           // ttls run from 1 to Spread seconds
	LatRate float64       // updates/s whose latency is measured meanwhile
}

// SnapshotPoint is a set of concurrent joins at one map size.
type SnapshotPoint struct {
	Keys       int     `json:"keys"`    // keys in the map (and expected per join)
	Joiners    int     `json:"joiners"` // concurrent
	Complete   int     `json:"complete"`
	Syncs      []int   `json:"syncs"`
	Lost       int     `json:"lost"` // KVSYNCs missing over all joiners
	Done       []Dur   `json:"done"` // request to KTHXBAI per joiner
	First      []Dur   `json:"first"`
	DoneMax    Dur     `json:"done_max"`
	FirstMax   Dur     `json:"first_max"`
	KeysPerSec float64 `json:"keys_per_s"` // all joiners' KVSYNCs / slowest
}

// MapResult is one server's run of the map cases.
type MapResult struct {
	Impl          string          `json:"impl"`
	Load          []LoadPoint     `json:"load"`
	Snapshots     []SnapshotPoint `json:"snapshots"`
	Single        []Dur           `json:"single_runs"` // one joiner, largest size
	SingleMedian  Dur             `json:"single_median"`
	SingleLost    int             `json:"single_lost"` // worst run
	Subtree       Dur             `json:"subtree_median"`
	SubtreeKeys   int             `json:"subtree_keys"`
	SubtreeSyncs  int             `json:"subtree_syncs"`
	IdleRSS       int64           `json:"idle_rss"`
	LoadedRSS     int64           `json:"loaded_rss"`
	PeakRSS       int64           `json:"peak_rss"`
	BytesPerKey   float64         `json:"bytes_per_key"`
	TTL           *TTLResult      `json:"ttl,omitempty"`
	Keys          int             `json:"keys"`
	ServerCPULoad Dur             `json:"server_cpu_load"`
}

// LoadPoint is one load step.
type LoadPoint struct {
	Keys int     `json:"keys"`
	Time Dur     `json:"time"`
	Rate float64 `json:"rate"`
}

// mapRig loads keys into one server.
type mapRig struct {
	target  *Target
	zctx    *zmq.Context
	clk     clock
	p       MapParams
	buckets int
	stored  int // keys the server holds: loaded + markers
	loaded  int
	gen     int
}

func (m *mapRig) key(i int) []byte {
	return fmt.Appendf(nil, "/m/%03d/%07d", i%m.buckets, i)
}

// load brings the map to n keys with 16-byte bodies and 16-byte UUIDs,
// sending from p.Loaders PUSH sockets at full speed, and returns once the
// server has stored them all (every loader's marker is in a snapshot).
func (m *mapRig) load(ctx context.Context, n int) (LoadPoint, error) {
	m.gen++
	uuid := make([]byte, kvmsg.UUIDLen)
	_, _ = rand.Read(uuid)
	specs := make([]pubSpec, m.p.Loaders)
	for l := range specs {
		var keys [][]byte
		for i := m.loaded + l; i < n; i += m.p.Loaders {
			keys = append(keys, m.key(i))
		}
		specs[l] = pubSpec{Keys: keys, Body: 16, N: len(keys), UUID: uuid,
			Marker: fmt.Appendf(nil, "/done/%d/%d", m.gen, l)}
		if len(keys) == 0 {
			specs[l].Keys = [][]byte{m.key(0)}
		}
	}
	start := time.Now()
	if _, _, err := publishAll(ctx, m.zctx, m.target.Port, specs, m.clk); err != nil {
		return LoadPoint{}, fmt.Errorf("%s load %d keys: %w", m.target.Impl, n, err)
	}
	subtree := fmt.Sprintf("/done/%d/", m.gen)
	for deadline := time.Now().Add(3 * time.Minute); ; {
		j, err := fetchSnapshot(m.zctx, m.target.Port, subtree, 10*time.Second, time.Second, false)
		if err != nil {
			return LoadPoint{}, err
		}
		if j.Complete && j.Syncs == m.p.Loaders {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return LoadPoint{}, fmt.Errorf("%s: load of %d keys not stored after 3 min", m.target.Impl, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	d := time.Since(start)
	m.stored += n - m.loaded + m.p.Loaders
	m.loaded = n
	return LoadPoint{Keys: n, Time: Dur(d), Rate: float64(n) / d.Seconds()}, nil
}

// joins runs k concurrent joiners for the whole map.
func (m *mapRig) joins(k int) (SnapshotPoint, error) {
	sp := SnapshotPoint{Keys: m.stored, Joiners: k}
	res := make([]joinResult, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() { res[i], errs[i] = fetchSnapshot(m.zctx, m.target.Port, "", m.p.FirstWait, m.p.Idle, false) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return sp, err
	}
	total := 0
	for _, r := range res {
		sp.Syncs = append(sp.Syncs, r.Syncs)
		sp.Done = append(sp.Done, Dur(r.Done))
		sp.First = append(sp.First, Dur(r.First))
		sp.DoneMax = max(sp.DoneMax, Dur(r.Done))
		sp.FirstMax = max(sp.FirstMax, Dur(r.First))
		sp.Lost += max(m.stored-r.Syncs, 0)
		total += r.Syncs
		if r.Complete {
			sp.Complete++
		}
	}
	if sp.DoneMax > 0 {
		sp.KeysPerSec = float64(total) / time.Duration(sp.DoneMax).Seconds()
	}
	return sp, nil
}

// runMap runs the map cases on each server in turn.
func runMap(ctx context.Context, l Launcher, p MapParams, prog *Progress) ([]MapResult, error) {
	var out []MapResult
	for _, impl := range p.Impls {
		r, err := mapOne(ctx, l, p, impl, prog)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func mapOne(ctx context.Context, l Launcher, p MapParams, impl string, prog *Progress) (res MapResult, err error) {
	res.Impl = impl
	prog.Step("%s: starting", impl)
	t, err := l.Launch(ctx, impl)
	if err != nil {
		return res, err
	}
	zctx, err := newZctx(64)
	if err != nil {
		return res, errors.Join(err, t.Stop())
	}
	defer func() { err = errors.Join(err, zctx.Term(), t.Stop()) }()
	big := p.Sizes[len(p.Sizes)-1]
	m := &mapRig{target: t, zctx: zctx, clk: newClock(), p: p, buckets: max(big/p.SubtreeKeys, 1)}
	time.Sleep(300 * time.Millisecond)
	idle, _ := ReadProc(t.PID)
	res.IdleRSS = idle.RSS
	for _, n := range p.Sizes {
		prog.Step("%s: loading %s keys", impl, si(float64(n)))
		lp, err := m.load(ctx, n)
		if err != nil {
			return res, err
		}
		res.Load = append(res.Load, lp)
		if n == big {
			time.Sleep(time.Second) // let the server settle before reading RSS
			s, _ := ReadProc(t.PID)
			res.LoadedRSS, res.Keys = s.RSS, n
			res.BytesPerKey = float64(s.RSS-idle.RSS) / float64(n)
			res.ServerCPULoad = Dur(s.CPU - idle.CPU)
			for run := range p.Runs {
				prog.Step("%s: one joiner, %s keys, run %d", impl, si(float64(n)), run+1)
				sp, err := m.joins(1)
				if err != nil {
					return res, err
				}
				res.Single = append(res.Single, sp.Done[0])
				res.SingleLost = max(res.SingleLost, sp.Lost)
			}
			ds := make([]time.Duration, len(res.Single))
			for i, d := range res.Single {
				ds[i] = time.Duration(d)
			}
			res.SingleMedian = Dur(medianDur(ds))
		}
		prog.Step("%s: %d joiners, %s keys", impl, p.Joiners, si(float64(n)))
		sp, err := m.joins(p.Joiners)
		if err != nil {
			return res, err
		}
		res.Snapshots = append(res.Snapshots, sp)
	}
	prog.Step("%s: subtree", impl)
	var subs []time.Duration
	subtree := fmt.Sprintf("/m/%03d/", 7%m.buckets)
	for range 5 {
		j, err := fetchSnapshot(zctx, t.Port, subtree, p.FirstWait, p.Idle, false)
		if err != nil {
			return res, err
		}
		subs = append(subs, j.Done)
		res.SubtreeSyncs = j.Syncs
	}
	res.Subtree, res.SubtreeKeys = Dur(medianDur(subs)), big/m.buckets
	s, _ := ReadProc(t.PID)
	res.PeakRSS = s.HWM
	if p.TTL.Keys > 0 {
		tr, err := runTTL(ctx, m, p.TTL, prog)
		if err != nil {
			return res, err
		}
		res.TTL = &tr
	}
	return res, nil
}

// TTLResult is the ttl case on one server holding the big map.
type TTLResult struct {
	Tick       Dur     `json:"tick"`         // the server's reaper period
	Quiet      Dur     `json:"quiet_window"` // nothing due meanwhile
	LatRate    float64 `json:"lat_rate"`     // timed updates/s while keys expire
	QuietCPU   Dur     `json:"quiet_cpu"`
	CPUPerTick Dur     `json:"cpu_per_tick"`
	Keys       int     `json:"keys"`    // given a ttl
	Expired    int     `json:"expired"` // deletes received
	LateP50    Dur     `json:"late_p50"`
	LateP99    Dur     `json:"late_p99"`
	LateMax    Dur     `json:"late_max"`
	LatP50     Dur     `json:"latency_p50"` // update latency while expiring
	LatP99     Dur     `json:"latency_p99"`
	LatP999    Dur     `json:"latency_p999"`
	LatMax     Dur     `json:"latency_max"`
	LatLost    int64   `json:"latency_lost"`
	ExpiryRate float64 `json:"expiry_rate"`
	ExpiryCPU  Dur     `json:"expiry_cpu"`
	MapKeys    int     `json:"map_keys"`
	Spread     int     `json:"spread_s"`
}

// reapTick is each implementation's ttl period.
func reapTick(impl string) time.Duration {
	if impl == ImplBaseline {
		return time.Second
	}
	return 100 * time.Millisecond
}

func runTTL(ctx context.Context, m *mapRig, p TTLParams, prog *Progress) (TTLResult, error) {
	impl := m.target.Impl
	res := TTLResult{Tick: Dur(reapTick(impl)), Quiet: Dur(p.Quiet), Keys: p.Keys, MapKeys: m.loaded, Spread: p.Spread, LatRate: p.LatRate}
	prog.Step("%s: idle CPU over %v with %s keys, none due", impl, p.Quiet, si(float64(m.loaded)))
	time.Sleep(500 * time.Millisecond)
	s0, err := ReadProc(m.target.PID)
	if err != nil {
		return res, err
	}
	time.Sleep(p.Quiet)
	s1, err := ReadProc(m.target.PID)
	if err != nil {
		return res, err
	}
	res.QuietCPU = Dur(s1.RunNanos - s0.RunNanos)
	res.CPUPerTick = Dur(time.Duration(res.QuietCPU) * reapTick(impl) / p.Quiet)

	// Expiries: one subscriber follows /ttl/ (the deletes) and /lat/ (the
	// timed updates); arrival[i] is written only by its goroutine and read
	// after it has stopped.
	prog.Step("%s: %d keys expiring over %ds, updates at %s/s", impl, p.Keys, p.Spread, si(p.LatRate))
	arrival := make([]time.Duration, p.Keys)
	var expired atomic.Int64
	onMsg := func(key, body []byte, _ int64, now time.Duration) {
		if len(body) != 0 || len(key) != 12 || string(key[:5]) != "/ttl/" {
			return
		}
		i := 0
		for _, c := range key[5:] {
			i = i*10 + int(c-'0')
		}
		if i < len(arrival) && arrival[i] == 0 {
			arrival[i] = now
			expired.Add(1)
		}
	}
	subCtx, stopSub := context.WithCancel(ctx)
	defer stopSub()
	sub, err := startSubscriber(subCtx, m.zctx, m.target.Port, m.clk, []string{"/ttl/", "/lat/"}, onMsg)
	if err != nil {
		return res, err
	}
	r := &rig{target: m.target, zctx: m.zctx, clk: m.clk, subs: []*subscriber{sub}}
	if err := r.warmup(ctx, "/lat/probe", 10*time.Second); err != nil {
		return res, err
	}
	r.takeHists()
	latDur := time.Duration(p.Spread)*time.Second + 1500*time.Millisecond
	latN := int(p.LatRate * latDur.Seconds())
	before, lostBefore := r.counts()
	c0, _ := ReadProc(m.target.PID)

	ttlKeys := make([][]byte, p.Keys)
	for i := range ttlKeys {
		ttlKeys[i] = fmt.Appendf(nil, "/ttl/%07d", i)
	}
	var wg sync.WaitGroup
	var latErr error
	wg.Go(func() {
		spec := pubSpec{Keys: makeKeys("/lat/", 100), Body: minBody, N: latN, Rate: p.LatRate, Timed: true}
		_, latErr = publish(ctx, m.zctx, m.target.Port, spec, m.clk)
	})
	// The ttl keys go out in Spread groups, one per ttl value, so that the
	// due time of every key is known from its group's send time.
	sendStart := make([]time.Duration, p.Spread+1)
	sendEnd := make([]time.Duration, p.Spread+1)
	per := p.Keys / p.Spread
	for g := 1; g <= p.Spread; g++ {
		lo, hi := (g-1)*per, g*per
		if g == p.Spread {
			hi = p.Keys
		}
		spec := pubSpec{Keys: ttlKeys[lo:hi], Body: 16, N: hi - lo, Props: fmt.Appendf(nil, "ttl=%d\n", g)}
		sendStart[g] = m.clk.now()
		if _, err := publish(ctx, m.zctx, m.target.Port, spec, m.clk); err != nil {
			return res, fmt.Errorf("%s: send ttl keys: %w", impl, err)
		}
		sendEnd[g] = m.clk.now()
	}
	deadline := time.Now().Add(time.Duration(p.Spread)*time.Second + 4*time.Second)
	for expired.Load() < int64(p.Keys) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	rec, lost := r.waitDelivered(before, lostBefore, int64(latN), 300*time.Millisecond, 5*time.Second)
	c1, _ := ReadProc(m.target.PID)
	res.ExpiryCPU = Dur(c1.CPU - c0.CPU)
	lat := r.takeHists()
	stopSub()
	<-sub.done
	if latErr != nil {
		return res, latErr
	}
	res.LatP50, res.LatP99, res.LatP999, res.LatMax = Dur(lat.Quantile(0.5)), Dur(lat.Quantile(0.99)), Dur(lat.Quantile(0.999)), Dur(lat.Max())
	// Updates on /lat/ (the probe included) against what was sent.
	res.LatLost = lost + max(int64(latN)-rec[0], 0)
	late := NewHist()
	var first, last time.Duration
	for g := 1; g <= p.Spread; g++ {
		lo, hi := (g-1)*per, g*per
		if g == p.Spread {
			hi = p.Keys
		}
		for i := lo; i < hi; i++ {
			if arrival[i] == 0 {
				continue
			}
			// Due: the key's send time (interpolated within its group) + ttl.
			sent := sendStart[g] + (sendEnd[g]-sendStart[g])*time.Duration(i-lo)/time.Duration(max(hi-lo, 1))
			late.Record(arrival[i] - sent - time.Duration(g)*time.Second)
			res.Expired++
			if first == 0 || arrival[i] < first {
				first = arrival[i]
			}
			last = max(last, arrival[i])
		}
	}
	res.LateP50, res.LateP99, res.LateMax = Dur(late.Quantile(0.5)), Dur(late.Quantile(0.99)), Dur(late.Max())
	if last > first {
		res.ExpiryRate = float64(res.Expired) / (last - first).Seconds()
	}
	return res, nil
}
