package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/clonekv/clonekv/server"
)

// EnvHTTP gives cluster status's default --http: the variable clonesrv
// reads for its own --http listener, so on a node's host it names that
// node.
const EnvHTTP = "CLONEKV_HTTP"

// nodeAnswer is one queried node's status, or why there is none.
type nodeAnswer struct {
	addr   string
	status *server.ClusterStatus
	err    error
}

// cmdCluster: cluster status --http ADDR[,ADDR...]. Each node reports
// itself on its --http listener (GET /v1/cluster); the leader also reports
// how far each follower's log is. Nodes of the cluster not queried are
// listed with what the leader knows of them.
func cmdCluster(inv *invocation) error {
	httpAddrs := inv.Flags.String("http", inv.g.getenv(EnvHTTP), "the nodes' clonesrv --http addresses host:port, comma-separated; query every node for a full table (env "+EnvHTTP+")")
	asJSON := inv.Flags.Bool("json", false, "print each queried node's status as a JSON line instead of the table")
	args, err := inv.Parse(1, 1)
	if err != nil {
		return err
	}
	if args[0] != "status" {
		return &usageError{fmt.Sprintf("cluster: unknown subcommand %q (usage: %s)", args[0], inv.synopsis())}
	}
	var addrs []string
	for _, a := range strings.Split(*httpAddrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return &usageError{"cluster status: give the nodes' --http addresses (--http host:port,... or " + EnvHTTP + ")"}
	}
	answers := queryNodes(inv.Ctx, addrs, inv.g.timeout)
	failed := 0
	for _, a := range answers {
		if a.err != nil {
			failed++
		}
	}
	if *asJSON {
		enc := json.NewEncoder(inv.Stdout)
		for _, a := range answers {
			if a.err != nil {
				fmt.Fprintf(inv.Stderr, "clonecli cluster status: %s: %v\n", a.addr, a.err)
				continue
			}
			if err := enc.Encode(a.status); err != nil {
				return err
			}
		}
	} else if err := writeClusterTable(inv.Stdout, answers); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d of %d nodes did not answer", failed, len(answers))
	}
	return nil
}

// queryNodes asks every address at once, each within timeout.
func queryNodes(ctx context.Context, addrs []string, timeout time.Duration) []nodeAnswer {
	out := make([]nodeAnswer, len(addrs))
	hc := &http.Client{Timeout: timeout}
	var wg sync.WaitGroup
	for i, addr := range addrs {
		wg.Go(func() {
			out[i] = nodeAnswer{addr: addr}
			out[i].status, out[i].err = server.FetchClusterStatus(ctx, hc, addr)
		})
	}
	wg.Wait()
	return out
}

// writeClusterTable prints one row per node: the queried ones as they
// answered, then the cluster's other nodes as the leader sees them.
func writeClusterTable(w io.Writer, answers []nodeAnswer) error {
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tROLE\tTERM\tCOMMIT\tAPPLIED\tSEQUENCE\tLAG\tCONTACT\tLEADER\tREADY\tHTTP")
	seen := map[string]bool{}
	var leader *server.ClusterStatus
	for _, a := range answers {
		if a.status == nil {
			continue
		}
		s := a.status
		seen[s.Node] = true
		if s.Role == "leader" && (leader == nil || s.Term > leader.Term) {
			leader = s
		}
	}
	for _, a := range answers {
		if a.err != nil {
			fmt.Fprintf(tw, "?\tunreachable\t\t\t\t\t\t\t\t\t%s (%v)\n", a.addr, a.err)
			continue
		}
		s := a.status
		ready := "yes"
		if !s.Ready {
			ready = "no: " + s.NotReady
		}
		leaderName := s.Leader
		if leaderName == "" {
			leaderName = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%s\n", s.Node, s.Role, s.Term, s.CommitIndex, s.AppliedIndex,
			s.AppliedSequence, s.Lag, contact(s.LastContactMillis), leaderName, ready, s.HTTP)
	}
	// The others, from any answer's peer list; replication figures from the
	// leader's.
	var others []server.ClusterPeerStatus
	for _, a := range answers {
		if a.status == nil {
			continue
		}
		for _, p := range a.status.Peers {
			if !seen[p.Name] {
				seen[p.Name] = true
				others = append(others, p)
			}
		}
	}
	for _, p := range others {
		row := fmt.Sprintf("%s\t(not queried)\t\t\t\t\t\t\t\t\t", p.Name)
		if leader != nil {
			for _, lp := range leader.Peers {
				if lp.Name == p.Name && lp.Known {
					row = fmt.Sprintf("%s\t(not queried)\t\t%d\t\t\t%d\t%s\t%s\t\t", p.Name, lp.LastIndex, lp.Lag, contact(lp.LastContactMillis), leader.Node)
				}
			}
		}
		fmt.Fprintln(tw, row)
	}
	return tw.Flush()
}

func contact(ms int64) string {
	if ms < 0 {
		return "never"
	}
	return (time.Duration(ms) * time.Millisecond).String()
}
