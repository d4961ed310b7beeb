module clonekv

go 1.26.8

require (
	github.com/asynkron/protoactor-go v0.0.0-20240822202345-3c0e61ca19c9 // indirect
	github.com/pebbe/zmq4 v1.4.0 // indirect
	github.com/tidwall/btree v1.8.2 // indirect
)
