package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestUsageHistoryOfARealGuest: the built-in agent samples a real QEMU
// guest into its host's history; the API and the CLI read it, a plan
// sizes the VM from it, and a server restart keeps it.
func TestUsageHistoryOfARealGuest(t *testing.T) {
	requireQEMU(t)
	srv := startServer(t, t.TempDir(), "--usage-interval", "500ms")
	c := srv.c
	ctx := context.Background()
	importGuest(t, c)
	waitOK(t, c, mustOp(t)(c.CreateVM(ctx, guestVM("sampled"), client.CreateOptions{})))
	waitConsole(t, c, "sampled", marker, 1)

	var u *api.UsageHistory
	eventually(t, 30*time.Second, "sampled points", func() error {
		var err error
		if u, err = c.VMUsage(ctx, "sampled", client.UsageRange{Since: "1h"}); err != nil {
			return err
		}
		if n := len(u.Points); n == 0 || u.Points[n-1].Samples < 4 {
			return errNotYet
		}
		return nil
	})
	p := u.Points[len(u.Points)-1]
	// The guest's boot keeps QEMU busy under TCG; its process holds tens
	// of MiB.
	if p.CPUMax <= 0.05 || p.MemoryBytes < 10<<20 || p.MemoryMaxBytes < p.MemoryBytes || u.StepSeconds != 300 || u.CPUs != 1 {
		t.Fatalf("the guest's point %+v of %+v", p, u)
	}
	h, err := c.HostUsage(ctx, "local", client.UsageRange{Since: "1h"})
	if err != nil || len(h.Points) == 0 || h.Points[len(h.Points)-1].MemoryMaxBytes < p.MemoryBytes {
		t.Fatalf("the host's history %+v: %v", h, err)
	}

	out, err := exec.Command(binary, "--server", "unix://"+srv.socket, "vm", "usage", "sampled", "--since", "1h").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "cores of 1") || !strings.Contains(string(out), "MEMORY") {
		t.Fatalf("polyvisor vm usage: %v\n%s", err, out)
	}

	plan, err := c.PlanConsolidate(ctx, api.PlanRequest{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, as := range plan.Placement {
		if as.VM == "default/sampled" && as.Source != "history" {
			t.Errorf("the plan sizes the guest by %s, not its history: %+v", as.Source, as)
		}
	}

	// A restart of the server (and its agent) keeps what was sampled.
	srv.stop()
	srv.args = []string{"--usage-interval", "1h"}
	srv.start()
	eventually(t, 30*time.Second, "the history after a restart", func() error {
		again, err := c.VMUsage(ctx, "sampled", client.UsageRange{Since: "1h"})
		if err != nil {
			return errNotYet // the agent is not back yet
		}
		if len(again.Points) == 0 || again.Points[0].Samples < u.Points[0].Samples {
			t.Fatalf("after a restart: %+v, before %+v", again.Points, u.Points)
		}
		return nil
	})
}
