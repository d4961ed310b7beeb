package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clonekv/clonekv/gateway"
)

// BenchmarkWatchFanout measures the SSE fan-out: W watchers of one prefix
// over HTTP while a ZeroMQ client writes R updates a second for 2s (a fresh server and gateway per row). A row
// is sustained when every watcher received every update, none was cut off
// and the hub never had to reset, with the last update reaching every
// watcher within 1s of being sent. It asserts nothing; run it with
//
//	go test -run '^$' -bench WatchFanout -benchtime 1x ./gateway/
func BenchmarkWatchFanout(b *testing.B) {
	for _, w := range []int{1, 10, 50, 100, 200} {
		for _, rate := range []int{5000, 10000, 20000, 40000} {
			var res fanoutResult
			b.Run(fmt.Sprintf("watchers=%d/rate=%d", w, rate), func(b *testing.B) {
				for range b.N {
					res = fanoutRun(b, w, rate) // a rig per row, freed at the row's end
				}
			})
			fmt.Printf("watchers=%3d rate=%6d/s deliveries=%8.0f/s lag=%-8v cuts=%d resets=%d sustained=%v\n",
				w, rate, res.deliveries, res.lag.Round(time.Millisecond), res.cuts, res.resets, res.sustained)
			if !res.sustained {
				break // higher rates will not be either
			}
		}
	}
}

type fanoutResult struct {
	deliveries float64
	lag        time.Duration
	cuts       int64
	resets     int64
	sustained  bool
}

func fanoutRun(b *testing.B, watchers, rate int) fanoutResult {
	r := newRig(b, rigOptions{gateway: func(c *gateway.Config) { c.MaxWatchers = 1000 }})
	n := rate * 2
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	got := make([]int, watchers)
	ends := make([]time.Time, watchers)
	ready := make(chan struct{}, watchers)
	for i := range watchers {
		req, _ := http.NewRequestWithContext(ctx, "GET", r.base+"/v1/watch?prefix=/w/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		wg.Go(func() { // counts put events until /w/end
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				line := sc.Text()
				switch {
				case line == "event: synced":
					ready <- struct{}{}
				case strings.HasPrefix(line, `data: {"key":"/w/end"`):
					ends[i] = time.Now()
					return
				case line == "event: put":
					got[i]++
				}
			}
		})
	}
	for range watchers {
		<-ready
	}
	start := time.Now()
	streamAt(b, r.srv.Port(), 0, n, rate)
	sent := time.Now()
	wg.Wait()
	res := fanoutResult{cuts: r.gw.Stats().Cuts, resets: r.gw.Stats().Resets - 1, sustained: true}
	var last time.Time
	for i := range watchers {
		if got[i] != n+1 || ends[i].IsZero() { // +1: /w/end's own put
			res.sustained = false
		}
		if ends[i].After(last) {
			last = ends[i]
		}
	}
	res.lag = max(last.Sub(sent), 0)
	res.deliveries = float64(watchers*n) / last.Sub(start).Seconds()
	if res.cuts > 0 || res.resets > 0 || res.lag > time.Second {
		res.sustained = false
	}
	return res
}
