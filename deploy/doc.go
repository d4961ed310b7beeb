// Package deploy holds what it takes to run clonesrv as a service: the
// systemd unit (clonesrv.service) and an example configuration file
// (clonekv.toml). Its test checks the unit, with systemd-analyze verify
// when that tool is present.
package deploy
