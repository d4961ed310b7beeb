package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/clonekv/clonekv/client"
	"github.com/clonekv/clonekv/config"
	"github.com/clonekv/clonekv/internal/logging"
	"github.com/clonekv/clonekv/transport"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailure  = 1 // the server is unreachable, an update was not confirmed, ...
	exitUsage    = 2 // bad command line
	exitNotFound = 3 // get: no such key
)

// EnvServer names the environment variable that gives the default --server.
const EnvServer = "CLONEKV_SERVER"

// EnvCollector gives the default --collector. It is the variable clonesrv
// reads for its own --collector, on purpose: one setting makes both sides
// agree.
const EnvCollector = "CLONEKV_COLLECTOR"

// Environment variables that give the default CURVE key files. clonesrv
// shares the CLONEKV_ prefix and ignores these (its IgnoreEnv list).
const (
	EnvCurveServerKeyFile = "CLONEKV_CURVE_SERVER_KEY_FILE"
	EnvCurveKeyFile       = "CLONEKV_CURVE_KEY_FILE"
)

const defaultServer = "tcp://127.0.0.1:5556"

// command is one subcommand: a table entry in commands().
type command struct {
	name    string
	args    string // synopsis after the name, for help
	summary string
	run     func(inv *invocation) error
}

// commands is the subcommand table, in the order help lists them.
func commands() []command {
	return []command{
		{"get", "KEY [--json]", "print the value stored under KEY (exit 3 if there is none)", cmdGet},
		{"set", "KEY VALUE [--ttl 30s]", "set KEY to VALUE and wait until the server has published it", cmdSet},
		{"del", "KEY", "delete KEY and wait until the server has published the delete", cmdDel},
		{"watch", "[SUBTREE] [--json] [--since SEQ] [--stats 10s]", "print one line per event (update, delete, resync, resumed, full, server switch) until interrupted; --since: first what changed after SEQ", cmdWatch},
		{"dump", "[SUBTREE] [--json]", "print the keys under SUBTREE as key<TAB>value lines", cmdDump},
		{"demo", "[--subtree /client/] [--interval 1s]", "the Guide's Model Five client: set a random key with a random ttl every interval, print what arrives", cmdDemo},
		{"cluster", "status --http HOST:PORT[,HOST:PORT...] [--json]", "list every node of a clonesrv cluster: role, term, commit and applied index, applied sequence, lag, last contact with the leader, readiness", cmdCluster},
		{"keygen", "NAME [--dir .]", "write a CURVE key pair: NAME.key (secret, mode 0600) and NAME.pub (give it to the other side)", cmdKeygen},
	}
}

// globals are the flags every subcommand accepts, before or after its name.
type globals struct {
	server   string
	timeout  time.Duration
	logLevel string
	// CURVE: the server's public key file and our own key pair file.
	curveServerKeyFile string
	curveKeyFile       string
	collector          string        // pull or sub: the server's collector socket
	heartbeatTimeout   time.Duration // 0: no silence detection
	zmtpHeartbeat      time.Duration // 0: no ZMTP heartbeats
	getenv             func(string) string
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.server, "server", g.server, "server base address(es) tcp://host:P, comma-separated for failover (env "+EnvServer+")")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "how long to wait for the server (to join, and to confirm an update)")
	fs.StringVar(&g.logLevel, "log-level", g.logLevel, "client log level: debug, info, warn, error")
	fs.StringVar(&g.curveServerKeyFile, "curve-server-key-file", g.curveServerKeyFile,
		"talk CURVE to the server: its public key file NAME.pub (env "+EnvCurveServerKeyFile+"; needs --curve-key-file)")
	fs.StringVar(&g.collector, "collector", g.collector,
		"the server's collector socket, as clonesrv's --collector: pull (Model Five, clonesrv's default; updates go on a PUSH) or sub (RFC 12 / Model Six; updates go on a PUB) (env "+EnvCollector+")")
	fs.DurationVar(&g.heartbeatTimeout, "heartbeat-timeout", g.heartbeatTimeout,
		"watch, demo: re-join (or fail over) when a server that sends HUGZ sends nothing for this long; 0 turns silence detection off")
	fs.DurationVar(&g.zmtpHeartbeat, "zmtp-heartbeat", g.zmtpHeartbeat,
		"ZMTP heartbeats (PING/PONG) on the subscriber at this interval, timing out after three: finds a hung server that sends no HUGZ (a stopped process); a watcher that falls that far behind is dropped and re-joins too. 0: off")
	fs.StringVar(&g.curveKeyFile, "curve-key-file", g.curveKeyFile,
		"this client's CURVE key pair file NAME.key from clonecli keygen (env "+EnvCurveKeyFile+"; needs --curve-server-key-file)")
}

// curve reads the CURVE key files, if given. It is called only by commands
// that connect, so keygen works while the variables name files it has yet
// to write.
func (g *globals) curve() (*transport.CurveClient, error) {
	switch {
	case g.curveServerKeyFile == "" && g.curveKeyFile == "":
		return nil, nil
	case g.curveServerKeyFile == "":
		return nil, &usageError{"--curve-key-file needs --curve-server-key-file (the server's .pub file; env " + EnvCurveServerKeyFile + ")"}
	case g.curveKeyFile == "":
		return nil, &usageError{"--curve-server-key-file needs --curve-key-file (this client's .key file from clonecli keygen; env " + EnvCurveKeyFile + ")"}
	}
	serverKey, err := config.ReadPublicKeyFile(g.curveServerKeyFile)
	if err != nil {
		return nil, &usageError{"--curve-server-key-file: " + err.Error()}
	}
	kp, err := config.ReadSecretKeyFile(g.curveKeyFile)
	if err != nil {
		return nil, &usageError{"--curve-key-file: " + err.Error()}
	}
	return &transport.CurveClient{ServerKey: serverKey, PublicKey: kp.Public, SecretKey: kp.Secret}, nil
}

// invocation is what a subcommand gets: its flag set (already holding the
// global flags), its raw arguments, the global settings and the outputs.
type invocation struct {
	Ctx    context.Context
	Name   string
	Flags  *flag.FlagSet
	Stdout io.Writer
	Stderr io.Writer

	args []string
	g    *globals
	log  *slog.Logger
}

// usageError is a bad command line: exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

// notFoundError is get's missing key: exit 3.
type notFoundError struct{ key string }

func (e *notFoundError) Error() string { return fmt.Sprintf("no key %q", e.key) }

// Parse parses the subcommand's flags, which may appear anywhere among its
// arguments ("--" ends them), and returns between min and max positional
// arguments (max < 0: any number).
func (inv *invocation) Parse(min, max int) ([]string, error) {
	var pos []string
	args := inv.args
	for {
		if err := inv.Flags.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{err.Error()}
		}
		rest := inv.Flags.Args()
		if consumed := len(args) - len(rest); consumed > 0 && args[consumed-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	switch {
	case len(pos) < min:
		return nil, &usageError{fmt.Sprintf("%s: missing argument (usage: %s)", inv.Name, inv.synopsis())}
	case max >= 0 && len(pos) > max:
		return nil, &usageError{fmt.Sprintf("%s: too many arguments %q (usage: %s)", inv.Name, pos[max:], inv.synopsis())}
	}
	if inv.g.timeout <= 0 {
		return nil, &usageError{"--timeout must be positive"}
	}
	log, err := logging.New(inv.Stderr, inv.g.logLevel, "text")
	if err != nil {
		return nil, &usageError{err.Error()}
	}
	inv.log = log
	return pos, nil
}

func (inv *invocation) synopsis() string {
	for _, c := range commands() {
		if c.name == inv.Name {
			return "clonecli " + c.name + " " + c.args
		}
	}
	return "clonecli " + inv.Name
}

// options returns client options for the global flags.
func (inv *invocation) options(subtree string, filter client.Filter) (client.Options, error) {
	curve, err := inv.g.curve()
	if err != nil {
		return client.Options{}, err
	}
	collector, err := client.ParseCollector(inv.g.collector)
	if err != nil {
		return client.Options{}, &usageError{"--collector: want pull or sub, got " + strconv.Quote(inv.g.collector)}
	}
	hb := inv.g.heartbeatTimeout
	switch {
	case hb < 0:
		return client.Options{}, &usageError{"--heartbeat-timeout must not be negative (0 turns it off)"}
	case hb == 0:
		hb = -1 // the client's "off"
	}
	if inv.g.zmtpHeartbeat < 0 {
		return client.Options{}, &usageError{"--zmtp-heartbeat must not be negative (0 turns it off)"}
	}
	eps := strings.Split(inv.g.server, ",")
	return client.Options{
		Endpoints:        eps,
		Subtree:          subtree,
		Filter:           filter,
		Collector:        collector,
		HeartbeatTimeout: hb,
		ZMTPHeartbeat:    inv.g.zmtpHeartbeat,
		JoinTimeout:      max(inv.g.timeout/time.Duration(len(eps)), 100*time.Millisecond),
		Curve:            curve,
		Logger:           inv.log,
	}, nil
}

// newClient starts a client for subtree; bad options are usage errors.
func (inv *invocation) newClient(subtree string, filter client.Filter) (*client.Client, error) {
	opts, err := inv.options(subtree, filter)
	if err != nil {
		return nil, err
	}
	c, err := client.New(opts)
	if err != nil {
		return nil, &usageError{err.Error()}
	}
	return c, nil
}

// Dial joins the server for subtree within --timeout, with an error a
// shell user can act on when it cannot.
func (inv *invocation) Dial(subtree string, filter client.Filter) (*client.Client, error) {
	c, err := inv.newClient(subtree, filter)
	if err != nil {
		return nil, err
	}
	if err := inv.waitSynced(c); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (inv *invocation) waitSynced(c *client.Client) error {
	ctx, cancel := context.WithTimeout(inv.Ctx, inv.g.timeout)
	defer cancel()
	if err := c.WaitSynced(ctx); err != nil {
		if inv.Ctx.Err() != nil {
			return errors.New("interrupted")
		}
		last := c.Stats().LastError
		if last == "" {
			last = "no answer"
		}
		return fmt.Errorf("cannot reach a clonekv server at %s within %v: %s\n  (%s)", inv.g.server, inv.g.timeout, last, inv.hint(last))
	}
	return nil
}

// hint says what to check after a failed join, given the client's last
// error: CURVE keys when a handshake failed, else the address.
func (inv *invocation) hint(last string) string {
	switch {
	case strings.Contains(last, "could not decode"):
		return "something answers there, but not in the Clone protocol as clonekv reads it: check that --server is a clone server's base port P"
	case strings.Contains(last, "refused the snapshot"):
		return "the server is up but busy: it refused the snapshot request; retry, or raise --timeout"
	case !strings.Contains(last, "handshake"):
		return fmt.Sprintf("is clonesrv running there? set --server or %s to its base address tcp://host:P", EnvServer)
	case inv.g.curveKeyFile == "":
		return fmt.Sprintf("the server may require CURVE: set --curve-server-key-file (its .pub) and --curve-key-file (this client's .key), or %s and %s",
			EnvCurveServerKeyFile, EnvCurveKeyFile)
	default:
		return "check that --curve-server-key-file is this server's .pub, that the server uses CURVE, and that it admits this client's public key (its --curve-allow directory)"
	}
}

// parseGlobals reads the global flags before the command (their defaults
// from the environment through getenv) and returns them, the flag set that
// holds them (for usage) and the rest: the command and its arguments.
func parseGlobals(args []string, getenv func(string) string) (*globals, *flag.FlagSet, []string, error) {
	g := &globals{server: defaultServer, timeout: 5 * time.Second, logLevel: "warn", collector: "pull", heartbeatTimeout: 3 * time.Second, getenv: getenv}
	if s := getenv(EnvServer); s != "" {
		g.server = s
	}
	if s := getenv(EnvCollector); s != "" {
		g.collector = s
	}
	g.curveServerKeyFile = getenv(EnvCurveServerKeyFile)
	g.curveKeyFile = getenv(EnvCurveKeyFile)
	// The flag package's own printing is silenced: help goes to stdout,
	// errors to stderr, each once.
	top := flag.NewFlagSet("clonecli", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	g.register(top)
	err := top.Parse(args)
	return g, top, top.Args(), err
}

// newInvocation is what command name gets: a flag set of its own that also
// holds the global flags (so that they may follow the command), and args.
func newInvocation(ctx context.Context, name string, args []string, g *globals, stdout, stderr io.Writer) *invocation {
	fs := flag.NewFlagSet("clonecli "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	g.register(fs)
	return &invocation{Ctx: ctx, Name: name, Flags: fs, Stdout: stdout, Stderr: stderr, args: args, g: g}
}

// run is the whole command, for tests: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	g, top, rest, err := parseGlobals(args, getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, top)
			return exitOK
		}
		fmt.Fprintf(stderr, "clonecli: %v (run \"clonecli help\")\n", err)
		return exitUsage
	}
	if len(rest) == 0 {
		usage(stderr, top)
		return exitUsage
	}
	name, rest := rest[0], rest[1:]
	if name == "help" {
		if len(rest) > 0 {
			return run(ctx, []string{rest[0], "--help"}, stdout, stderr, getenv)
		}
		usage(stdout, top)
		return exitOK
	}
	var cmd *command
	for _, c := range commands() {
		if c.name == name {
			cmd = &c
			break
		}
	}
	if cmd == nil {
		fmt.Fprintf(stderr, "clonecli: unknown command %q (run \"clonecli help\")\n", name)
		return exitUsage
	}
	inv := newInvocation(ctx, name, rest, g, stdout, stderr)
	err = cmd.run(inv)
	var ue *usageError
	var nf *notFoundError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(stdout, "Usage: clonecli %s %s\n\n%s.\n\nFlags:\n", cmd.name, cmd.args, cmd.summary)
		inv.Flags.SetOutput(stdout)
		inv.Flags.PrintDefaults()
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "clonecli: %v\n", err)
		return exitUsage
	case errors.As(err, &nf):
		fmt.Fprintf(stderr, "clonecli: %v\n", err)
		return exitNotFound
	default:
		fmt.Fprintf(stderr, "clonecli %s: %v\n", name, err)
		return exitFailure
	}
}

func usage(w io.Writer, top *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: clonecli [--server tcp://host:P] [--timeout 5s] COMMAND [ARGS]\n\n"+
		"A client for a clonekv server (ZeroMQ Clone pattern). The server address is\n"+
		"--server, else $%s, else %s.\n\nCommands:\n", EnvServer, defaultServer)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s %s\t%s\n", c.name, c.args, c.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nExit status: 0 ok, 1 failure (e.g. server unreachable), 2 usage, 3 get: no such key.\n"+
		"A VALUE that starts with '-' goes after \"--\". \"clonecli help COMMAND\" shows a command's flags.\n\nGlobal flags:\n")
	top.SetOutput(w)
	top.PrintDefaults()
}
