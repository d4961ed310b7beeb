package actors

// Leadership tells an actor which node leads the log (README "Running a
// cluster"). The server sends it to the proposer and the reaper once the log
// is open and again on every change. A single node leads its one-voter log
// for good: it is told Self once. Until an actor hears otherwise it behaves
// as the leader, which is what a single node needs.
type Leadership struct {
	// Self: this node leads and may propose entries.
	Self bool
	// Leader is the leading node's name ("" while none is known).
	Leader string
	// Collector is the leader's collector endpoint, "tcp://HOST:P+2" (""
	// while no leader is known, and when Self).
	Collector string
	// Term is the raft term the leadership belongs to.
	Term uint64
}
