package adapter

// Credits bound how many batches are in flight between a reader and the end
// of the pipeline it feeds. The reader takes a credit before it reads a
// batch and whoever finishes the batch (the publisher's writer, on the
// server) gives it back. When credits run out the reader stops reading, the
// socket's receive queue fills, and ZeroMQ pushes back on the senders:
// memory stays bounded instead of growing in an unbounded mailbox.
type Credits struct {
	ch chan struct{}
}

// NewCredits returns n credits (at least 1).
func NewCredits(n int) *Credits {
	if n < 1 {
		n = 1
	}
	c := &Credits{ch: make(chan struct{}, n)}
	for i := 0; i < n; i++ {
		c.ch <- struct{}{}
	}
	return c
}

// Acquire takes a credit, waiting until one is returned or stop is closed.
// It reports whether it got one.
func (c *Credits) Acquire(stop <-chan struct{}) bool {
	select {
	case <-c.ch:
		return true
	case <-stop:
		return false
	}
}

// Release gives a credit back. Releasing more than was acquired panics, as
// it would be a bookkeeping bug.
func (c *Credits) Release() {
	select {
	case c.ch <- struct{}{}:
	default:
		panic("transport: credit released twice")
	}
}

// Available returns how many credits are free now.
func (c *Credits) Available() int { return len(c.ch) }
