package daemon

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/internal/hypervisor/hypervisortest"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/server"
	"github.com/polyvisor/polyvisor/internal/simagent"
)

// simulateOptions are the flags of `polyvisor agent --simulate N`.
type simulateOptions struct {
	hosts       int
	prefix      string
	first       int
	tokenFile   string
	profile     string
	cpus        int
	memoryMiB   int64
	concurrency int
	addresses   string
	shared      int
	statsFile   string
	pprof       string
	usage       bool // keep the hosts' usage history
}

func addSimulateFlags(cmd *cobra.Command, o *simulateOptions) {
	f := cmd.Flags()
	f.IntVar(&o.hosts, "simulate", 0, "run this many simulated hosts in this process instead of this machine's agent (for measuring the control plane; their VMs never run)")
	f.StringVar(&o.prefix, "simulate-prefix", "sim-", "with --simulate: host names are the prefix and a number on five digits")
	f.IntVar(&o.first, "simulate-first", 1, "with --simulate: the first host's number (to run a fleet in several processes)")
	f.StringVar(&o.tokenFile, "join-token-file", "", "with --simulate: a file of join tokens, one per line, one for each host that has not joined yet")
	f.StringVar(&o.profile, "simulate-profile", "qemu-tcg", "with --simulate: how the simulated hypervisor behaves: qemu-tcg (latencies and usage measured from QEMU without KVM) or instant")
	f.IntVar(&o.cpus, "simulate-cpus", 64, "with --simulate: the CPUs each simulated host reports")
	f.Int64Var(&o.memoryMiB, "simulate-memory-mib", 256<<10, "with --simulate: the memory each simulated host reports, in MiB")
	f.IntVar(&o.concurrency, "simulate-register-concurrency", 16, "with --simulate: hosts registering at once")
	f.StringVar(&o.addresses, "simulate-source-addresses", "auto", "with --simulate: own (each host dials from its own 127.1.x.y address), shared, or auto (own when the servers are on loopback)")
	f.IntVar(&o.shared, "simulate-shared-conns", 0, "with --simulate: send the hosts' requests over this many shared connections per server (each host keeps its own watch connection); 0: each host has its own, as a real agent")
	f.StringVar(&o.statsFile, "simulate-stats-file", "", "with --simulate: write the fleet's counters there as JSON every second")
	f.BoolVar(&o.usage, "simulate-usage", false, "with --simulate: keep the hosts' usage history in <data-dir>/usage, sampled every --usage-interval")
	f.StringVar(&o.pprof, "debug-pprof-listen", "", "serve Go's pprof profiles on this loopback address (host:port), for diagnosis")
	for _, n := range []string{"simulate-prefix", "simulate-first", "simulate-profile", "simulate-cpus", "simulate-memory-mib",
		"simulate-register-concurrency", "simulate-source-addresses", "simulate-shared-conns", "simulate-stats-file", "debug-pprof-listen"} {
		_ = f.MarkHidden(n)
	}
}

// runSimulate runs `polyvisor agent --simulate N`: a fleet of simulated
// hosts, each joined with a token of its own, against the servers of
// serverURLs (comma-separated). Their credentials are kept in
// <dataDir>/simulated-hosts.json, so a fleet started again is the same
// hosts.
func runSimulate(parent context.Context, o simulateOptions, serverURLs, joinToken, dataDir string, heartbeat time.Duration, log *slog.Logger) error {
	cfg := simagent.Config{
		Hosts: o.hosts, Prefix: o.prefix, First: o.first, RegisterConcurrency: o.concurrency,
		HostCPUs: o.cpus, HostMemoryMiB: o.memoryMiB, HeartbeatInterval: heartbeat, SharedConns: o.shared,
		StateFile: filepath.Join(dataDir, "simulated-hosts.json"), StatsFile: o.statsFile, Logger: log,
	}
	if o.usage {
		cfg.UsageDir, cfg.UsageInterval = filepath.Join(dataDir, "usage"), usageInterval
	}
	for s := range strings.SplitSeq(serverURLs, ",") {
		if s = strings.TrimSpace(s); s != "" {
			cfg.Servers = append(cfg.Servers, s)
		}
	}
	if len(cfg.Servers) == 0 {
		return errors.New("--simulate: give the servers' URLs with --server (comma-separated for several)")
	}
	switch o.profile {
	case "qemu-tcg":
		cfg.Timings, cfg.Usage = hypervisortest.QEMUTimings(), hypervisortest.QEMUUsage()
	case "instant":
	default:
		return fmt.Errorf("--simulate-profile: must be qemu-tcg or instant, not %q", o.profile)
	}
	switch o.addresses {
	case "auto":
		cfg.SourceAddresses = simagent.SourceAuto
	case "own":
		cfg.SourceAddresses = simagent.SourceOwn
	case "shared":
		cfg.SourceAddresses = simagent.SourceShared
	default:
		return fmt.Errorf("--simulate-source-addresses: must be auto, own or shared, not %q", o.addresses)
	}
	tokens, err := simulateJoinTokens(o.tokenFile, joinToken)
	if err != nil {
		return err
	}
	cfg.JoinTokens = tokens
	if len(tokens) > 0 {
		if cfg.JoinTLS, err = pinnedJoinTLS(tokens); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("creating the agent's data dir: %w", err)
	}
	fleet, err := simagent.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.pprof != "" {
		if err := servePprof(ctx, o.pprof, log); err != nil {
			return err
		}
	}
	return fleet.Run(ctx)
}

// simulateJoinTokens reads the join tokens of a fleet: one per line of
// file (blank lines and lines starting with # skipped), or the one token
// given with --join-token.
func simulateJoinTokens(file, one string) ([]string, error) {
	if file == "" {
		if one != "" {
			return []string{one}, nil
		}
		return nil, nil
	}
	if one != "" {
		return nil, errors.New("--simulate: give --join-token-file or --join-token, not both")
	}
	fh, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("--join-token-file: %w", err)
	}
	defer fh.Close()
	var out []string
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--join-token-file: %w", err)
	}
	return out, nil
}

// pinnedJoinTLS trusts the server by the CA fingerprint the join tokens
// carry, which must be one for all.
func pinnedJoinTLS(tokens []string) (*tls.Config, error) {
	_, fp := server.SplitJoinToken(tokens[0])
	if fp == "" {
		return nil, errors.New("--simulate: the first join token carries no CA fingerprint; copy tokens whole from 'polyvisor host join-token'")
	}
	for i, t := range tokens[1:] {
		if _, f := server.SplitJoinToken(t); f != fp {
			return nil, fmt.Errorf("--join-token-file: token %d names another CA than the first: all hosts of a fleet join one control plane", i+2)
		}
	}
	tc, err := pki.PinnedTLSConfig(fp)
	if err != nil {
		return nil, fmt.Errorf("--join-token-file: %w", err)
	}
	return tc, nil
}
