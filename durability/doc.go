// Package durability holds the process tests of clonekv's durable history
// (issue 12): real clonesrv processes on 127.0.0.1, stopped, killed and
// restarted on one data directory, checked through the wire protocol and
// the files they leave.
package durability
