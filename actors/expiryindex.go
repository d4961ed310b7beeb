package actors

import (
	"container/heap"

	"github.com/clonekv/clonekv/kvmap"
)

// expiryItem is one key with a ttl.
type expiryItem struct {
	key   string
	seq   int64 // the update that set the ttl
	at    int64 // unix nanoseconds
	index int
}

// expiryIndex is a heap of expiryItems plus a map from key to item.
type expiryIndex struct {
	items []*expiryItem
	byKey map[string]*expiryItem
}

func (x *expiryIndex) Len() int           { return len(x.items) }
func (x *expiryIndex) Less(i, j int) bool { return x.items[i].at < x.items[j].at }
func (x *expiryIndex) Swap(i, j int) {
	x.items[i], x.items[j] = x.items[j], x.items[i]
	x.items[i].index, x.items[j].index = i, j
}
func (x *expiryIndex) Push(v any) {
	it := v.(*expiryItem)
	it.index = len(x.items)
	x.items = append(x.items, it)
}
func (x *expiryIndex) Pop() any {
	n := len(x.items) - 1
	it := x.items[n]
	x.items[n] = nil
	x.items = x.items[:n]
	return it
}

// track updates the index for one committed update: a new ttl adds or
// moves the key; anything else that touches a tracked key removes it.
func (x *expiryIndex) track(u *Update) {
	if u.ExpiresAt.IsZero() {
		x.remove(string(u.Msg.Key))
		return
	}
	x.push(string(u.Msg.Key), u.Msg.Seq, u.ExpiresAt.UnixNano())
}

// push adds key, or moves it when it is indexed already.
func (x *expiryIndex) push(key string, seq, at int64) {
	if x.byKey == nil {
		x.byKey = make(map[string]*expiryItem)
	}
	if it := x.byKey[key]; it != nil {
		it.seq, it.at = seq, at
		heap.Fix(x, it.index)
		return
	}
	it := &expiryItem{key: key, seq: seq, at: at}
	x.byKey[key] = it
	heap.Push(x, it)
}

func (x *expiryIndex) remove(key string) {
	if it := x.byKey[key]; it != nil {
		heap.Remove(x, it.index)
		delete(x.byKey, key)
	}
}

func (x *expiryIndex) has(key string) bool { _, ok := x.byKey[key]; return ok }

// due reports whether a key's expiry is at or before now (unix nanoseconds).
func (x *expiryIndex) due(now int64) bool { return len(x.items) > 0 && x.items[0].at <= now }

// popDue removes the keys whose expiry is at or before now, earliest
// first, at most max of them, and hands each to fn.
func (x *expiryIndex) popDue(now int64, max int, fn func(key string, seq, at int64)) {
	for n := 0; n < max && x.due(now); n++ {
		it := heap.Pop(x).(*expiryItem)
		delete(x.byKey, it.key)
		fn(it.key, it.seq, it.at)
	}
}

// countDue returns how many keys are due at now, in O(due): the heap is
// walked only below entries that are due.
func (x *expiryIndex) countDue(now int64) int {
	n, stack := 0, []int{0}
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(x.items) || x.items[i].at > now {
			continue
		}
		n++
		stack = append(stack, 2*i+1, 2*i+2)
	}
	return n
}

// rebuild replaces the index with the keys of v that have an expiry (after
// a snapshot restore), in O(n).
func (x *expiryIndex) rebuild(v *kvmap.View) {
	x.items, x.byKey = nil, make(map[string]*expiryItem)
	v.Ascend(nil, func(e kvmap.Entry) bool {
		if at := e.Expires(); at != 0 {
			it := &expiryItem{key: string(e.Key()), seq: e.Seq(), at: at, index: len(x.items)}
			x.items = append(x.items, it)
			x.byKey[it.key] = it
		}
		return true
	})
	heap.Init(x)
}
