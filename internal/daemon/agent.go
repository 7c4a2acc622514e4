package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/agent"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/server"
)

// DefaultAgentDir is where a joined agent keeps its state.
const DefaultAgentDir = "/var/lib/polyvisor-agent"

// AgentCommand returns `polyvisor agent`.
func AgentCommand() *cobra.Command {
	var (
		serverURL, joinToken, dataDir, name, address string
		accel, confPath                              string
		logs                                         logFlags
		heartbeat                                    time.Duration
	)
	var sim simulateOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a host agent that joins a Polyvisor server",
		Long: `Run the host agent on a machine that should run VMs. The first start joins
the server with a single-use join token (from 'polyvisor host join-token'),
which also pins the server's CA; later starts reuse the saved credentials.`,
		Example: "  polyvisor agent --server https://pv.example.com:7443 --join-token pvj_...",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfigFile(cmd, confPath, DefaultAgentConfig); err != nil {
				return err
			}
			log, err := logs.logger()
			if err != nil {
				return err
			}
			if sim.hosts > 0 {
				return runSimulate(cmd.Context(), sim, serverURL, joinToken, dataDir, heartbeat, log)
			}
			if name == "" {
				name = defaultHostName()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			credPath := filepath.Join(dataDir, "credentials.json")
			for rejoined := false; ; rejoined = true {
				creds, err := loadCredentials(credPath)
				switch {
				case errors.Is(err, os.ErrNotExist):
					if serverURL == "" || joinToken == "" {
						return errors.New("this agent has not joined yet: give --server and --join-token")
					}
					creds, err = join(ctx, serverURL, joinToken, name, address)
					if err != nil {
						return err
					}
					if err := saveCredentials(credPath, creds); err != nil {
						return err
					}
					log.Info("joined", "server", serverURL, "host", creds.Host)
				case err != nil:
					return err
				}
				// A short dial timeout: a server that does not answer is
				// given up for the next one quickly.
				c, err := client.New(client.Config{URL: creds.Server, Servers: creds.Servers, Token: creds.Token, CACert: []byte(creds.CACert),
					DialTimeout: 3 * time.Second})
				if err != nil {
					return err
				}
				onServers := func(urls []string) {
					next := *creds
					next.Server, next.Servers = urls[0], urls
					if err := saveCredentials(credPath, &next); err != nil {
						log.Warn("keeping the servers' addresses with the credentials", "err", err)
					}
				}
				err = runAgent(ctx, c, agentOptions{host: creds.Host, stateDir: dataDir, address: address, accel: accel, heartbeat: heartbeat, logger: log, onServers: onServers})
				if !errors.Is(err, agent.ErrRevoked) {
					return err
				}
				// The credentials are dead: set them aside, so that a join
				// token (given now, or at the next start) joins again.
				if rerr := os.Rename(credPath, credPath+".revoked"); rerr != nil {
					return fmt.Errorf("host %q: %w (and setting its credentials aside: %v)", creds.Host, err, rerr)
				}
				// A join token is single use: the one this host joined with
				// cannot bring it back.
				if joinToken == "" || rejoined || creds.JoinedWith == joinTokenID(joinToken) {
					return fmt.Errorf("host %q: %w: join it again with 'polyvisor agent --server %s --join-token T' (T from 'polyvisor host join-token'); its VMs keep running", creds.Host, err, creds.Server)
				}
				log.Warn("the server refuses this host's credentials: joining again with --join-token", "host", creds.Host, "err", err)
			}
		},
	}
	f := cmd.Flags()
	f.StringVar(&serverURL, "server", "", "the server's URL (https://host:7443)")
	f.StringVar(&joinToken, "join-token", "", "a join token from 'polyvisor host join-token'")
	f.StringVar(&dataDir, "data-dir", DefaultAgentDir, "directory for the agent's credentials, VMs and image cache")
	f.StringVar(&name, "name", "", "this host's name (default: the hostname)")
	f.StringVar(&address, "address", "", "this host's address, as reported to the server")
	f.DurationVar(&heartbeat, "heartbeat-interval", 5*time.Second, "how often to report to the server (keep it well below the server's --heartbeat-timeout)")
	addAccelFlag(cmd, &accel)
	addUsageFlag(cmd)
	addConfigFlag(cmd, &confPath, DefaultAgentConfig)
	addSimulateFlags(cmd, &sim)
	logs.register(cmd)
	return cmd
}

// join registers with a server over TLS, trusting it through the CA
// fingerprint the join token carries.
func join(ctx context.Context, serverURL, joinToken, host, address string) (*credentials, error) {
	_, fp := server.SplitJoinToken(joinToken)
	if fp == "" {
		return nil, errors.New("--join-token: this token carries no CA fingerprint; copy it whole from 'polyvisor host join-token'")
	}
	tc, err := pki.PinnedTLSConfig(fp)
	if err != nil {
		return nil, fmt.Errorf("--join-token: %w", err)
	}
	c, err := client.New(client.Config{URL: serverURL, TLSConfig: tc})
	if err != nil {
		return nil, err
	}
	ac, err := register(ctx, c, joinToken, host, address)
	if err != nil {
		return nil, err
	}
	return &credentials{Server: serverURL, Host: ac.Host, Token: ac.Token, CACert: ac.CACert, JoinedWith: joinTokenID(joinToken)}, nil
}

func register(ctx context.Context, c *client.Client, joinToken, host, address string) (*api.AgentCredentials, error) {
	ac, err := c.Register(ctx, api.AgentRegister{JoinToken: joinToken, Host: host, Status: api.HostStatus{Address: address}})
	if err != nil {
		return nil, fmt.Errorf("registering host %q: %w", host, err)
	}
	return ac, nil
}

var nonLabel = regexp.MustCompile(`[^a-z0-9-]+`)

// sanitizeHostName turns a hostname into a valid host name (a DNS label).
func sanitizeHostName(h string) string {
	h, _, _ = strings.Cut(strings.ToLower(h), ".")
	h = strings.Trim(nonLabel.ReplaceAllString(h, "-"), "-")
	if len(h) > 63 {
		h = strings.Trim(h[:63], "-")
	}
	if h == "" {
		return "localhost"
	}
	return h
}
