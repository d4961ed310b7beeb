# clonekv: `make run` starts the server with defaults, `make test` runs every
# test. Both install libzmq first when pkg-config cannot find it.

GO        ?= go
BIN       ?= bin
PREFIX    ?= /usr/local
# Fuzzing budgets in executions, not seconds: Go 1.26's fuzz coordinator
# can fail a run at the end of a duration -fuzztime with a bare "context
# deadline exceeded" and no crasher when a worker is still busy (a race
# fixed in Go 1.27, golang/go#75804); CI hit it on FuzzMap. A count has no
# deadline to race. Each took 5-12 s on 2 cores (FuzzMap slows as its
# cached corpus grows); FUZZTIME=30s (or Nx)
# sets one budget for all.
FUZZ_DECODE   ?= 200000x
FUZZ_PROPS    ?= 300000x
FUZZ_SNAPSHOT ?= 15000x
FUZZ_MAP      ?= 4000x
export CGO_ENABLED = 1

.PHONY: all deps browser-deps build run lint test test-race test-durable test-heavy fuzz bench bench-quick soak install clean

all: build

# deps: libzmq and pkg-config, through apt, only when missing.
deps:
	@if ! pkg-config --exists libzmq 2>/dev/null; then \
		echo "libzmq not found by pkg-config: installing libzmq3-dev pkg-config"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y libzmq3-dev pkg-config; \
	fi

# browser-deps: Debian's chromium for the inspector's headless browser test
# (gateway/browser_test.go), through apt, only when missing. When it cannot
# be installed the test skips and says why.
browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "chromium not found: installing Debian's chromium for the browser test"; \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) || \
		echo "chromium could not be installed: TestInspectorInBrowser will skip"; \
	fi

build: deps
	$(GO) build -o $(BIN)/ ./cmd/...

# run: the server in the foreground with its defaults (ports 5556-5558 on all
# interfaces, its history in ./clonekv-data: stop and run again, the map is
# still there). Pass flags with ARGS, e.g. make run ARGS="--bind 127.0.0.1"
# or ARGS="--memory" for a server that forgets everything when it stops.
run: build
	./$(BIN)/clonesrv $(ARGS)

lint: deps
	$(GO) mod tidy -diff
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt -l lists unformatted files: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# test: lint, then every test with the race detector (the transport ones
# also through the fallback I/O path), then the in-process server tests
# again on a data directory (test-durable; the process tests run clonesrv on
# one anyway), then the million-key tests (too slow under -race) without
# it, then short fuzzing.
test: lint test-race test-durable test-heavy fuzz bench-quick

# The transport tests run a second time with the one-call cgo paths off
# (tag clonekv_nofastio), so the portable fallback stays tested.
test-race: deps browser-deps
	$(GO) test -race -count=1 -timeout 10m ./...
	$(GO) test -race -count=1 -tags clonekv_nofastio ./transport/...

test-durable: deps
	CLONEKV_TEST_DURABLE=1 $(GO) test -race -count=1 -timeout 10m \
		-run 'TestBadInput|TestSnapshotConsistent|TestCollectorSub|TestSnapshotSubtree|TestUpdatesSequenced|TestTTLExpiry|TestHeartbeat' ./server/

test-heavy: deps
	$(GO) test -count=1 -timeout 10m -run 'Million' ./server/

fuzz: deps
	$(GO) test -run='^$$' -fuzz='^FuzzDecode$$' -fuzztime=$(or $(FUZZTIME),$(FUZZ_DECODE)) ./kvmsg/
	$(GO) test -run='^$$' -fuzz='^FuzzProps$$' -fuzztime=$(or $(FUZZTIME),$(FUZZ_PROPS)) ./kvmsg/
	$(GO) test -run='^$$' -fuzz='^FuzzSnapshotRequest$$' -fuzztime=$(or $(FUZZTIME),$(FUZZ_SNAPSHOT)) ./actors/
	$(GO) test -run='^$$' -fuzz='^FuzzMap$$' -fuzztime=$(or $(FUZZTIME),$(FUZZ_MAP)) ./kvmap/

# bench: the full benchmark (clonekv | baseline | ratio, at most about 5 min
# on 2 cores, plus about a minute for the cluster case, which runs clonesrv
# processes: hence clonesrv is built too); tables on stdout, JSON and an HTML
# chart in bench/results/.
# bench-quick: every case, small (under a minute); a smoke test, not a figure.
# Neither asserts speed.
bench: deps
	$(GO) build -o $(BIN)/ ./cmd/clonebench ./cmd/clonesrv
	$(BIN)/clonebench --json bench/results/bench.json --chart bench/results/bench.html

bench-quick: deps
	$(GO) build -o $(BIN)/ ./cmd/clonebench ./cmd/clonesrv
	$(BIN)/clonebench --quick --json bench/results/quick.json --chart bench/results/quick.html

# soak: the reliability battery at full size without the race detector
# (10 s flood, 2,000 clients, 10,000 cycles), the herds (300 joiners of a
# 100,000-key map; 300 clients across a restart), the 200,000-key mass
# expiry, then the bounded soak: SOAK
# of mixed load (5m by default; SOAK=30m to extend), the server's RSS and
# goroutines sampled every SOAK_SAMPLE and printed as a table; then the
# cluster's randomized fault run: CLUSTER_SOAK (3m by default) of kill -9,
# SIGSTOP and minority faults on three nodes under four writers, checked
# and counted (cluster/soak_test.go).
SOAK         ?= 5m
SOAK_SAMPLE  ?= 10s
SOAK_TIMEOUT ?= 3h
CLUSTER_SOAK ?= 3m
soak: deps
	$(GO) test -count=1 -timeout 10m ./reliability/
	$(GO) test -tags soak -count=1 -timeout 30m -run '^(TestJoinHerd|TestHerdRestart)$$' -v ./reliability/
	$(GO) test -tags soak -count=1 -timeout 10m -run '^TestMassExpirySoak$$' -v ./durability/
	$(GO) test -tags soak -count=1 -timeout 30m -run '^TestResumeHerd$$' -v ./client/
	SOAK=$(SOAK) SOAK_SAMPLE=$(SOAK_SAMPLE) $(GO) test -tags soak -count=1 -timeout $(SOAK_TIMEOUT) -run '^TestSoak$$' -v ./reliability/
	CLUSTER_SOAK=$(CLUSTER_SOAK) $(GO) test -tags soak -count=1 -timeout $(SOAK_TIMEOUT) -run '^TestClusterSoak$$' -v ./cluster/

# install: the commands into $(PREFIX)/bin (deploy/clonesrv.service expects
# /usr/local/bin), built with version-control stamping so that
# clonesrv --version names the commit even where GOFLAGS has -buildvcs=false.
install: deps
	$(GO) build -buildvcs=auto -o $(BIN)/ ./cmd/...
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN)/* $(DESTDIR)$(PREFIX)/bin/

clean:
	rm -rf $(BIN)
