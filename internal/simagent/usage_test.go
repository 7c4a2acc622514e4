package simagent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/hypervisor/hypervisortest"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/server"
)

// TestFleetKeepsUsage: simulated hosts sample their VMs (QEMU's measured
// usage) into a history the server reads through them, as from agents.
func TestFleetKeepsUsage(t *testing.T) {
	ts := startTestServer(t)
	ctx := context.Background()
	tokens := ts.joinTokens(ctx, 2)
	_, fp := server.SplitJoinToken(tokens[0])
	joinTLS, err := pki.PinnedTLSConfig(fp)
	if err != nil {
		t.Fatal(err)
	}
	runFleet(t, Config{
		Servers: []string{ts.url}, Hosts: 2, Prefix: "us-", JoinTokens: tokens, JoinTLS: joinTLS,
		HeartbeatInterval: 200 * time.Millisecond, Usage: hypervisortest.QEMUUsage(),
		UsageDir: filepath.Join(t.TempDir(), "usage"), UsageInterval: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	names := []string{"us-00001", "us-00002"}
	eventually(t, 20*time.Second, "the hosts join", func() error { return hostsReady(ctx, ts.local, names) })
	waitOp(t, ts.local, mustOp(t)(ts.local.UploadImage(ctx, "k", api.ImageKernel, strings.NewReader("a kernel"), -1, nil)))
	for i := range 4 {
		waitOp(t, ts.local, mustOp(t)(ts.local.CreateVM(ctx, api.VMCreate{Name: "u" + strconv.Itoa(i), VCPUs: 1, MemoryMiB: 256, Boot: api.Boot{Kernel: "k"}}, client.CreateOptions{})))
	}
	for i := range 4 {
		name := "u" + strconv.Itoa(i)
		eventually(t, 20*time.Second, name+"'s sampled usage", func() error {
			u, err := ts.local.VMUsage(ctx, name, client.UsageRange{Since: "1h"})
			if err != nil {
				return err
			}
			if n := len(u.Points); n == 0 || u.Points[n-1].Samples < 3 || u.Points[n-1].MemoryBytes < 62<<20 {
				return fmt.Errorf("points %+v", u.Points)
			}
			return nil
		})
	}
	var total int64
	for _, h := range names {
		u, err := ts.local.HostUsage(ctx, h, client.UsageRange{Since: "1h"})
		if err != nil {
			t.Fatal(err)
		}
		if n := len(u.Points); n > 0 {
			total += u.Points[n-1].MemoryMaxBytes
		}
	}
	if total < 4*62<<20 {
		t.Errorf("the hosts' memory peaks sum to %d bytes, below the 4 vms' base", total)
	}
}
