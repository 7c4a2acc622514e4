package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/agent"
	"github.com/polyvisor/polyvisor/internal/hypervisor/qemu"
	"github.com/polyvisor/polyvisor/internal/provider/registry"
	"github.com/polyvisor/polyvisor/internal/server"
)

// DefaultDataDir is where the server keeps its state.
const DefaultDataDir = "/var/lib/polyvisor"

// ServerCommand returns `polyvisor server`.
func ServerCommand() *cobra.Command {
	var (
		cfg       server.Config
		logs      logFlags
		hostName  string
		noAgent   bool
		advertise []string
		accel     string
		agentAddr string
		confPath  string
		joinURL   string
		joinToken string
	)
	var pprofAddr string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane (with an embedded store and a built-in agent by default)",
		Long: `Run Polyvisor's control plane: the REST API on TLS and a unix socket, the
operation controller and, unless --no-agent, a built-in agent that runs VMs on
this host. State lives in an etcd embedded under --data-dir, or in the external
cluster named by --etcd-endpoints.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfigFile(cmd, confPath, DefaultServerConfig); err != nil {
				return err
			}
			log, err := logs.logger()
			if err != nil {
				return err
			}
			cfg.Logger = log
			cfg.AdvertiseAddresses = advertise
			if w := cfg.Audit.WhenFull; w != api.AuditWhenFullAlarm && w != api.AuditWhenFullRefuse {
				return fmt.Errorf("--audit-when-full: must be %s or %s, not %q", api.AuditWhenFullAlarm, api.AuditWhenFullRefuse, w)
			}
			if p := cfg.Scheduler.SamplePercent; p < 0 || p > 100 {
				return fmt.Errorf("--placement-sample-percent: must be from 1 to 100, or 0 for the default, not %d", p)
			}
			cfg.ProviderFactory = registry.New
			if cfg.Socket == "" {
				cfg.Socket = filepath.Join(cfg.DataDir, "polyvisor.sock")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			if joinURL != "" || cfg.PeerListen != "" {
				// A server among others needs a name they can tell apart.
				if cfg.Name == "" {
					cfg.Name = defaultHostName()
				}
			}
			if joinURL != "" {
				if err := joinServers(ctx, cfg, joinURL, joinToken, log); err != nil {
					return err
				}
			} else if joinToken != "" {
				return errors.New("--join-token: give the URL of a server to join with --join")
			}
			cfg.UsageInterval = usageInterval
			srv, err := server.New(ctx, cfg)
			if err != nil {
				return err
			}
			defer srv.Close()
			if err := srv.Start(ctx); err != nil {
				return err
			}
			if pprofAddr != "" {
				if err := servePprof(ctx, pprofAddr, log); err != nil {
					return err
				}
			}
			printHowTo(cmd, srv, cfg)
			// The server may stop on its own: removed from the cluster.
			ctx, fatal := context.WithCancelCause(ctx)
			defer fatal(nil)
			go func() {
				select {
				case err := <-srv.Fatal():
					fatal(err)
				case <-ctx.Done():
				}
			}()
			if noAgent {
				<-ctx.Done()
			} else {
				if hostName == "" {
					hostName = defaultHostName()
				}
				if err := runBuiltinAgent(ctx, srv, cfg, hostName, accel, agentAddr); err != nil && context.Cause(ctx) == ctx.Err() {
					return err
				}
			}
			if cause := context.Cause(ctx); cause != nil && cause != ctx.Err() {
				return cause
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", DefaultDataDir, "directory for the embedded store, TLS material, tokens and images")
	f.StringVar(&cfg.Listen, "listen", ":7443", "TLS address of the API (empty disables TCP)")
	f.StringVar(&cfg.Socket, "socket", "", "unix socket for local root use (default <data-dir>/polyvisor.sock)")
	f.StringSliceVar(&cfg.EtcdEndpoints, "etcd-endpoints", nil, "external etcd endpoints (default: embedded etcd)")
	f.StringVar(&joinURL, "join", "", "join the control plane of the server at this URL (https://s1:7443) as one more server, with --join-token (first start only)")
	f.StringVar(&joinToken, "join-token", "", "with --join: a server join token from 'polyvisor cluster join-token' on a running server")
	f.DurationVar(&cfg.EtcdElectionTimeout, "etcd-election-timeout", time.Second, "with --peer-listen: how long the embedded etcd members go without their raft leader before electing another (every server of a cluster the same)")
	f.StringVar(&cfg.PeerListen, "peer-listen", "", "with the embedded etcd: TLS address its member listens on for the other servers' members (e.g. :7444); needed to join servers or be joined")
	f.StringVar(&cfg.Name, "name", "", "name of this server among the servers sharing the store (default: the hostname)")
	f.DurationVar(&cfg.LeaderTTL, "leader-ttl", 5*time.Second, "how long a leader that stopped renewing its session keeps the lead of the controllers")
	f.StringSliceVar(&advertise, "advertise-address", nil, "extra DNS names or IPs agents use to reach this server (added to its certificate)")
	f.StringVar(&hostName, "host-name", "", "name of this host for the built-in agent (default: the hostname)")
	f.BoolVar(&noAgent, "no-agent", false, "run no built-in agent (VMs run only on joined hosts)")
	addAccelFlag(cmd, &accel)
	addUsageFlag(cmd)
	f.Lookup("usage-interval").Usage += "; the leading server samples the connected providers' VMs and hosts as often, into <data-dir>/usage-providers"
	f.StringVar(&agentAddr, "agent-address", "", "the built-in agent's host address, as reported to the server; live migrations to this host come in on it (default: loopback only)")
	addConfigFlag(cmd, &confPath, DefaultServerConfig)
	f.DurationVar(&cfg.HeartbeatTimeout, "heartbeat-timeout", 15*time.Second, "mark a host not ready when its agent has not reported for this long")
	f.DurationVar(&cfg.HA.FenceTimeout, "ha-fence-timeout", 20*time.Second, "T_fence: an agent whose heartbeats go unanswered this long kills its HA VMs, which the leader then restarts elsewhere (negative: no HA restarts; see docs/HA.md)")
	f.DurationVar(&cfg.HA.Margin, "ha-fence-margin", 0, "how long beyond T_fence the leader waits before restarting a silent host's HA VMs elsewhere; must be above a third of --heartbeat-timeout plus --ha-clock-skew (default 5s, or that and 1s when more)")
	f.DurationVar(&cfg.HA.ClockSkew, "ha-clock-skew", time.Second, "the most the servers' wall clocks may differ; the fence margin must exceed it plus a third of --heartbeat-timeout")
	f.BoolVar(&cfg.HA.FenceOnTimeout, "ha-fence-on-timeout", true, "restart a silent host's HA VMs elsewhere on its silence alone, at T_fence and the margin, when its last heartbeat said its keeper (the watchdog apart from the agent that kills them at T_fence) was armed; a host whose keeper was not armed is marked unknown and its HA VMs stay. Off (=false): only a --fence-hook that reports the host powered off restarts them (docs/HA.md)")
	f.StringSliceVar(&cfg.HA.Hook, "fence-hook", nil, "a command (and its arguments, comma-separated) run with a silent host's name as its last argument once it is silent for T_fence; exit 0 says the host is powered off, and its HA VMs restart at once")
	f.DurationVar(&cfg.ProviderResync, "provider-resync", time.Minute, "how often a provider's inventory is fully resynced besides its events")
	f.Float64Var(&cfg.Scheduler.CPUOvercommit, "cpu-overcommit", 0, "vCPUs offered per physical CPU (default 4)")
	f.Float64Var(&cfg.Scheduler.MemoryOvercommit, "memory-overcommit", 0, "memory overcommit ratio (default 1)")
	f.IntVar(&cfg.Scheduler.SamplePercent, "placement-sample-percent", 0, "on a fleet of more than 100 hosts, the share of hosts with room a placement looks for before choosing the best of them, from 1 to 100 (default: 50 less one per 125 hosts, at least 5, and at least 100 hosts)")
	f.Float64Var(&cfg.RateLimit, "rate-limit", 50, "API requests per second each user (or anonymous client address) may make; 0 disables")
	f.IntVar(&cfg.RateBurst, "rate-burst", 200, "requests a user may make at once above --rate-limit")
	f.DurationVar(&cfg.SessionTTL, "session-ttl", 12*time.Hour, "how long a login session lasts")
	f.DurationVar(&cfg.MaxTokenLifetime, "max-token-lifetime", 0, "the longest an API token made through the API may live; one asked never to expire lives that long (default: no maximum)")
	f.DurationVar(&cfg.LeaseInterval, "lease-interval", 10*time.Second, "how often VM leases are checked for expiry")
	f.Int64Var(&cfg.MigrationCheckpointBytes, "migration-checkpoint-bytes", 64<<20, "how often a migration's streamed copy is checkpointed, in bytes (a restart resumes from the last checkpoint)")
	f.Int64Var(&cfg.Audit.MaxBytes, "audit-max-bytes", 256<<20, "size of the audit log past which the audit-full alarm is raised (records younger than --audit-max-age are never dropped for size)")
	f.DurationVar(&cfg.Audit.MaxAge, "audit-max-age", 90*24*time.Hour, "how long audit records are kept")
	f.StringVar(&cfg.Edge.MetricsListen, "metrics-listen", "", "also serve /metrics without authentication, over plain HTTP, on this address (one only the monitoring network reaches); on the API port /metrics needs the metrics token of <data-dir>/metrics.token")
	f.DurationVar(&cfg.Edge.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "close a connection whose TLS handshake and request headers take longer")
	f.DurationVar(&cfg.Edge.IdleTimeout, "idle-timeout", 90*time.Second, "close a kept-alive connection idle for this long")
	f.DurationVar(&cfg.Edge.BodyReadTimeout, "body-read-timeout", 30*time.Second, "answer 400 when a request body does not arrive within this time (an upload: stalls this long); streams and consoles are exempt")
	f.IntVar(&cfg.Edge.MaxConnsPerAddress, "max-conns-per-address", 256, "connections one client address may hold open on the API port; negative for no limit")
	f.IntVar(&cfg.Edge.MaxEventStreamsPerUser, "max-event-streams-per-user", 16, "event streams one user may hold open; negative for no limit")
	f.IntVar(&cfg.Edge.MaxConsolesPerUser, "max-consoles-per-user", 16, "console websockets one user may hold open; negative for no limit")
	f.DurationVar(&cfg.Edge.Cert.Validity, "cert-validity", 365*24*time.Hour, "validity of the server certificates the server issues itself")
	f.DurationVar(&cfg.Edge.Cert.RenewBefore, "cert-renew-before", 30*24*time.Hour, "renew the server certificate, while running, this long before it expires")
	f.StringVar(&cfg.Audit.WhenFull, "audit-when-full", api.AuditWhenFullAlarm, "past --audit-max-bytes: alarm (keep writing) or refuse (refuse new records)")
	f.BoolVar(&cfg.AuditFailClosed, "audit-fail-closed", false, "refuse changes (503) while the audit log cannot write records (default: go on, with an alarm)")
	f.StringVar(&cfg.AuditDir, "audit-dir", "", "directory of the audit log, best on a disk of its own (default <data-dir>/audit)")
	f.Uint64Var(&cfg.MinFreeBytes, "min-free-space", 256<<20, "bytes kept free on the data dir's disk: below, the server is read-only until space is freed; 0 disables")
	f.Float64Var(&cfg.AddressRateLimit, "address-rate-limit", 200, "requests per second each client address may make, counted before authentication; 0 disables")
	f.IntVar(&cfg.AddressRateBurst, "address-rate-burst", 800, "requests a client address may make at once above --address-rate-limit")
	f.StringVar(&pprofAddr, "debug-pprof-listen", "", "serve Go's pprof profiles on this loopback address (host:port), for diagnosis")
	_ = f.MarkHidden("debug-pprof-listen")
	logs.register(cmd)
	return cmd
}

func printHowTo(cmd *cobra.Command, srv *server.Server, cfg server.Config) {
	out := cmd.ErrOrStderr()
	fmt.Fprintf(out, "Polyvisor server is running.\n")
	fmt.Fprintf(out, "  Local root uses the socket %s with no further setup:\n", cfg.Socket)
	fmt.Fprintf(out, "    export POLYVISOR_SERVER=unix://%s\n", cfg.Socket)
	if a := srv.Addr(); a != nil {
		port := strconv.Itoa(a.(*net.TCPAddr).Port)
		fmt.Fprintf(out, "  Elsewhere, point the CLI at the TLS API:\n")
		fmt.Fprintf(out, "    export POLYVISOR_SERVER=https://%s\n", net.JoinHostPort(defaultHostName(), port))
		fmt.Fprintf(out, "    export POLYVISOR_CA_FILE=%s\n", srv.CAFile())
		fmt.Fprintf(out, "    export POLYVISOR_TOKEN=$(cat %s)\n", srv.AdminTokenFile())
		fmt.Fprintf(out, "  (or put server, ca-file and token in ~/.config/polyvisor/config.yaml)\n")
	}
}

func defaultHostName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return sanitizeHostName(h)
}

// credentials are what an agent keeps after it registered.
type credentials struct {
	Server string `json:"server"`
	// Servers are every server of the control plane, the one in use
	// first, learnt from it at each watch: the agent fails over to them.
	Servers []string `json:"servers,omitempty"`
	Host    string   `json:"host"`
	Token   string   `json:"token"`
	CACert  string   `json:"caCert"`
	// JoinedWith identifies the join token used (a hash), so that the same
	// single-use token is not tried again after a revocation.
	JoinedWith string `json:"joinedWith,omitempty"`
}

// joinTokenID is what credentials remember of a join token.
func joinTokenID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:8])
}

func loadCredentials(path string) (*credentials, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c credentials
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	return &c, nil
}

func saveCredentials(path string, c *credentials) error {
	raw, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("saving credentials: %w", err)
	}
	return os.Rename(tmp, path)
}

// runBuiltinAgent runs this host's agent in-process. It is an ordinary
// agent that talks to the server over the unix socket with a host token;
// its first start registers with a join token the server mints for it.
func runBuiltinAgent(ctx context.Context, srv *server.Server, cfg server.Config, host, accel, address string) error {
	stateDir := filepath.Join(cfg.DataDir, "agent")
	credPath := filepath.Join(stateDir, "credentials.json")
	url := "unix://" + cfg.Socket
	creds, err := loadCredentials(credPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if creds != nil && creds.Host != host {
		return fmt.Errorf("the built-in agent in %s is registered as host %q: start the server with --host-name %s (a host cannot be renamed)", stateDir, creds.Host, creds.Host)
	}
	if creds == nil {
		jt, err := srv.MintJoinToken(ctx, host)
		if err != nil {
			return err
		}
		c, err := client.New(client.Config{URL: url})
		if err != nil {
			return err
		}
		ac, err := register(ctx, c, jt, host, "")
		if err != nil {
			return err
		}
		creds = &credentials{Server: url, Host: ac.Host, Token: ac.Token, CACert: ac.CACert}
		if err := saveCredentials(credPath, creds); err != nil {
			return err
		}
	}
	c, err := client.New(client.Config{URL: url, Token: creds.Token})
	if err != nil {
		return err
	}
	// Heartbeat well within the server's timeout.
	err = runAgent(ctx, c, agentOptions{host: host, stateDir: stateDir, address: address, accel: accel, heartbeat: min(5*time.Second, cfg.HeartbeatTimeout/3), logger: cfg.Logger})
	if !errors.Is(err, agent.ErrRevoked) {
		return err
	}
	// This server's own host was revoked or deleted: the control plane
	// goes on without it; the next start registers the host again.
	if rerr := os.Rename(credPath, credPath+".revoked"); rerr != nil {
		cfg.Logger.Error("setting the built-in agent's credentials aside", "err", rerr)
	}
	cfg.Logger.Error("the built-in agent stopped: its host was revoked or deleted; this server runs no VMs until it restarts", "host", host, "err", err)
	<-ctx.Done()
	return nil
}

// addAccelFlag registers --accel on a command that runs an agent.
func addAccelFlag(cmd *cobra.Command, accel *string) {
	cmd.Flags().StringVar(accel, "accel", qemu.AccelAuto, "accelerator for guests: auto (run a probe guest under KVM at start, use KVM only if it ran), kvm (required: refuse to start without a working KVM) or tcg")
}

// agentOptions are what runAgent needs besides the client.
type agentOptions struct {
	host, stateDir, address string
	accel                   string // auto, kvm or tcg
	heartbeat               time.Duration
	logger                  *slog.Logger
	// onServers keeps the control plane's server URLs as the agent learns
	// them.
	onServers func([]string)
}

func runAgent(ctx context.Context, c *client.Client, o agentOptions) error {
	host, stateDir, address, logger := o.host, o.stateDir, o.address, o.logger
	drv, err := qemu.New(qemu.Config{StateDir: filepath.Join(stateDir, "vms"), Accel: o.accel, Logger: logger.With("component", "qemu")})
	if err != nil {
		return fmt.Errorf("starting the qemu driver: %w", err)
	}
	acfg := agent.Config{
		Client: c, Host: host, StateDir: stateDir, Driver: drv, Address: address,
		HeartbeatInterval: o.heartbeat, OnServers: o.onServers, UsageInterval: usageInterval,
		Logger: logger.With("component", "agent", "host", host),
	}
	// The keeper is this program's `keeper` command; a test binary that
	// runs a server or an agent in-process has none.
	if exe, err := os.Executable(); err != nil {
		logger.Error("no keeper: cannot find this program to start it", "err", err)
	} else if !testing.Testing() {
		acfg.KeeperCommand = []string{exe, "keeper", "--data-dir", stateDir}
	}
	if dp := newDataplane(stateDir, logger); dp != nil {
		defer dp.Close()
		acfg.Network, acfg.Ports = dp, agent.ClientReporter{C: c}
	}
	a, err := agent.New(acfg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
