package kvmap

import "bytes"

// The ordered index is a copy-on-write B-tree (items in every node, as in a
// textbook B-tree) whose items are pointer-free: a slab number and an offset.
// The GC scans only the nodes themselves (a million keys need about ten
// thousand), never the items, and never the slabs' bytes.

// item locates one record: slabs[slab][off:].
type item struct {
	slab uint32
	off  uint32
}

const (
	maxItems = 127 // a full node's items; a node splits when it would hold more
	minItems = maxItems / 2
)

// node is a B-tree node. gen is the generation of the tree that created it:
// a tree mutates a node in place only when the generations match, and
// clones it otherwise (the node is then shared with a view).
type node struct {
	gen      uint64
	items    []item
	children []*node // nil in a leaf; len(items)+1 otherwise
}

func (n *node) leaf() bool { return n.children == nil }

// tree is the index plus the slab table its items resolve through. A View
// holds a tree by value; the Map's tree is the only one ever mutated.
type tree struct {
	root   *node
	length int
	gen    uint64
	slabs  [][]byte // slab number → bytes; never modified in place while shared
}

// keyAt returns the key of the record it points to.
func (t *tree) keyAt(it item) []byte { return recordKey(t.slabs[it.slab][it.off:]) }

// recordAt returns the bytes from the start of its record to the end of
// its slab.
func (t *tree) recordAt(it item) []byte { return t.slabs[it.slab][it.off:] }

// find returns the index of the first item of n whose key is >= key, and
// whether it is equal.
func (t *tree) find(n *node, key []byte) (int, bool) {
	lo, hi := 0, len(n.items)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if bytes.Compare(t.keyAt(n.items[mid]), key) < 0 {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, lo < len(n.items) && bytes.Equal(t.keyAt(n.items[lo]), key)
}

func (t *tree) get(key []byte) (item, bool) {
	for n := t.root; n != nil; {
		i, found := t.find(n, key)
		if found {
			return n.items[i], true
		}
		if n.leaf() {
			break
		}
		n = n.children[i]
	}
	return item{}, false
}

// mut returns n if this tree may write it, or a clone it may write.
func (t *tree) mut(n *node) *node {
	if n.gen == t.gen {
		return n
	}
	c := &node{gen: t.gen, items: make([]item, len(n.items), maxItems+1)}
	copy(c.items, n.items)
	if n.children != nil {
		c.children = make([]*node, len(n.children), maxItems+2)
		copy(c.children, n.children)
	}
	return c
}

func (t *tree) newNode() *node {
	return &node{gen: t.gen, items: make([]item, 0, maxItems+1)}
}

// set stores it under key (the key of it's record) and returns the item it
// replaced.
func (t *tree) set(key []byte, it item) (item, bool) {
	if t.root == nil {
		t.root = t.newNode()
		t.root.items = append(t.root.items, it)
		t.length = 1
		return item{}, false
	}
	t.root = t.mut(t.root)
	old, replaced, median, right := t.insert(t.root, key, it)
	if right != nil {
		r := t.newNode()
		r.items = append(r.items, median)
		r.children = make([]*node, 0, maxItems+2)
		r.children = append(r.children, t.root, right)
		t.root = r
	}
	if !replaced {
		t.length++
	}
	return old, replaced
}

// insert puts it into the writable subtree n. When n overflows it splits,
// returning the median item and the new right sibling for n's parent.
func (t *tree) insert(n *node, key []byte, it item) (old item, replaced bool, median item, right *node) {
	i, found := t.find(n, key)
	if found {
		old, n.items[i] = n.items[i], it
		return old, true, item{}, nil
	}
	if n.leaf() {
		n.items = insertAt(n.items, i, it)
	} else {
		c := t.mut(n.children[i])
		n.children[i] = c
		var m item
		var r *node
		old, replaced, m, r = t.insert(c, key, it)
		if r == nil {
			return old, replaced, item{}, nil
		}
		n.items = insertAt(n.items, i, m)
		n.children = insertAt(n.children, i+1, r)
	}
	if len(n.items) <= maxItems {
		return old, replaced, item{}, nil
	}
	mid := len(n.items) / 2
	if i == len(n.items)-1 {
		// Inserted at the end: keys arrive in order (a snapshot being
		// loaded, a bulk load), so keep this node full and start the next
		// one nearly empty; an even split would leave every node half full.
		mid = len(n.items) - 2
	}
	median = n.items[mid]
	right = t.newNode()
	right.items = append(right.items, n.items[mid+1:]...)
	n.items = n.items[:mid]
	if !n.leaf() {
		right.children = make([]*node, 0, maxItems+2)
		right.children = append(right.children, n.children[mid+1:]...)
		clear(n.children[mid+1:])
		n.children = n.children[:mid+1]
	}
	return old, replaced, median, right
}

// del removes key and returns its item.
func (t *tree) del(key []byte) (item, bool) {
	if t.root == nil {
		return item{}, false
	}
	if _, ok := t.get(key); !ok {
		return item{}, false // no copy-on-write for a miss
	}
	t.root = t.mut(t.root)
	old, ok := t.remove(t.root, key)
	if !ok {
		panic("kvmap: key found then not removed")
	}
	t.length--
	switch {
	case t.length == 0:
		t.root = nil
	case len(t.root.items) == 0 && !t.root.leaf():
		t.root = t.root.children[0]
	}
	return old, true
}

// remove deletes key from the writable subtree n, which holds it.
func (t *tree) remove(n *node, key []byte) (item, bool) {
	i, found := t.find(n, key)
	if n.leaf() {
		if !found {
			return item{}, false
		}
		old := n.items[i]
		n.items = removeAt(n.items, i)
		return old, true
	}
	c := t.mut(n.children[i])
	n.children[i] = c
	if found {
		// Replace with the predecessor, the last item of the left subtree.
		old := n.items[i]
		n.items[i] = t.removeMax(c)
		t.rebalance(n, i)
		return old, true
	}
	old, ok := t.remove(c, key)
	if ok {
		t.rebalance(n, i)
	}
	return old, ok
}

// removeMax removes and returns the last item of the writable subtree n.
func (t *tree) removeMax(n *node) item {
	if n.leaf() {
		last := n.items[len(n.items)-1]
		n.items = n.items[:len(n.items)-1]
		return last
	}
	j := len(n.children) - 1
	c := t.mut(n.children[j])
	n.children[j] = c
	it := t.removeMax(c)
	t.rebalance(n, j)
	return it
}

// rebalance refills n's writable child i when it has fallen below
// minItems: it borrows from a sibling or merges with one.
func (t *tree) rebalance(n *node, i int) {
	c := n.children[i]
	if len(c.items) >= minItems {
		return
	}
	if i > 0 && len(n.children[i-1].items) > minItems {
		l := t.mut(n.children[i-1])
		n.children[i-1] = l
		c.items = insertAt(c.items, 0, n.items[i-1])
		n.items[i-1] = l.items[len(l.items)-1]
		l.items = l.items[:len(l.items)-1]
		if !c.leaf() {
			c.children = insertAt(c.children, 0, l.children[len(l.children)-1])
			l.children[len(l.children)-1] = nil
			l.children = l.children[:len(l.children)-1]
		}
		return
	}
	if i < len(n.items) && len(n.children[i+1].items) > minItems {
		r := t.mut(n.children[i+1])
		n.children[i+1] = r
		c.items = append(c.items, n.items[i])
		n.items[i] = r.items[0]
		r.items = removeAt(r.items, 0)
		if !c.leaf() {
			c.children = append(c.children, r.children[0])
			r.children = removeAt(r.children, 0)
		}
		return
	}
	if i > 0 {
		i-- // merge c into its left sibling
	}
	l := t.mut(n.children[i])
	n.children[i] = l
	r := n.children[i+1]
	l.items = append(l.items, n.items[i])
	l.items = append(l.items, r.items...)
	if !l.leaf() {
		l.children = append(l.children, r.children...)
	}
	n.items = removeAt(n.items, i)
	n.children = removeAt(n.children, i+1)
}

func insertAt[T any](s []T, i int, v T) []T {
	var zero T
	s = append(s, zero)
	copy(s[i+1:], s[i:])
	s[i] = v
	return s
}

func removeAt[T any](s []T, i int) []T {
	copy(s[i:], s[i+1:])
	var zero T
	s[len(s)-1] = zero
	return s[:len(s)-1]
}

// iter walks a tree in key order. Each frame (n, i) means "item i of n is
// the next one not yet returned"; the subtree left of it has been walked.
type iter struct {
	t     *tree
	stack []frame
}

type frame struct {
	n *node
	i int
}

// seek positions the iterator before the first key >= key.
func (it *iter) seek(key []byte) {
	it.stack = it.stack[:0]
	for n := it.t.root; n != nil; {
		i, found := it.t.find(n, key)
		it.stack = append(it.stack, frame{n, i})
		if found || n.leaf() {
			return
		}
		n = n.children[i]
	}
}

// next returns the next item in key order.
func (it *iter) next() (item, bool) {
	for len(it.stack) > 0 {
		top := &it.stack[len(it.stack)-1]
		if top.i < len(top.n.items) {
			x := top.n.items[top.i]
			top.i++
			if !top.n.leaf() {
				for n := top.n.children[top.i]; n != nil; {
					it.stack = append(it.stack, frame{n, 0})
					if n.leaf() {
						break
					}
					n = n.children[0]
				}
			}
			return x, true
		}
		it.stack = it.stack[:len(it.stack)-1]
	}
	return item{}, false
}
