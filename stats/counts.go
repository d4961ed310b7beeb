package stats

import (
	"sort"
	"sync"
	"sync/atomic"
)

// Counts is a set of counters by reason (a metric label). The zero value
// is ready and it is safe for concurrent use.
type Counts struct {
	mu sync.Mutex
	by map[string]*atomic.Int64
}

// Add adds n to reason's counter and returns the new value.
func (c *Counts) Add(reason string, n int64) int64 {
	c.mu.Lock()
	if c.by == nil {
		c.by = make(map[string]*atomic.Int64)
	}
	v := c.by[reason]
	if v == nil {
		v = new(atomic.Int64)
		c.by[reason] = v
	}
	c.mu.Unlock()
	return v.Add(n)
}

// Get returns reason's count.
func (c *Counts) Get(reason string) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.by[reason]; v != nil {
		return v.Load()
	}
	return 0
}

// Count is one row of Counts.All.
type Count struct {
	Reason string
	Count  int64
}

// All returns every counter, sorted by reason.
func (c *Counts) All() []Count {
	c.mu.Lock()
	out := make([]Count, 0, len(c.by))
	for r, v := range c.by {
		out = append(out, Count{r, v.Load()})
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Reason < out[j].Reason })
	return out
}
