package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// busyLoop keeps the guest's one vCPU busy: under TCG its QEMU takes
// about a core of its host, which the agent's stats measure.
const busyLoop = "while :; do :; done"

// TestBalance: two hosts (the server's built-in agent and one in a
// network namespace), two CPU-busy guests on the first. In advise mode
// the balancer recommends one move, from the loaded host to the idle one,
// with its reason, and moves nothing; in automatic mode it carries it out
// by live migration; then over 10 more cycles nothing moves again.
func TestBalance(t *testing.T) {
	start := time.Now()
	requireQEMU(t)
	guest.RequireRun(t, guest.Paths{Dir: guestDir})
	hosts := startTwoHosts(t, "5s")
	c := hosts.c
	ctx := context.Background()
	for _, n := range []string{"busy1", "busy2"} {
		req := guestVM(n)
		req.Host, req.Boot.Cmdline = "local", guest.RunCmdline(busyLoop)
		if _, err := c.CreateVM(ctx, req, client.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	hosts.waitHost2(t)
	for _, n := range []string{"busy1", "busy2"} {
		waitConsole(t, c, n, marker, 1)
	}
	t.Logf("two hosts, two guests up after %v", time.Since(start))

	// Advise: one move from local to host2, with its reason; nothing moves.
	// The highest aggressiveness: on a machine shared with other work the
	// busy guests may get only a fraction of a core each, a small spread
	// of load between hosts of 2 CPUs; whatever it is, moving one guest
	// evens it out and moving either back only makes it worse.
	settings := api.BalanceSettings{Mode: api.BalanceAdvise, IntervalSeconds: 1, Aggressiveness: 5}
	if _, err := c.SetBalance(ctx, settings); err != nil {
		t.Fatal(err)
	}
	var rec api.BalanceMove
	var seen time.Time
	eventually(t, 20*time.Second, "an advise cycle that measured both guests recommends one move", func() error {
		b, err := c.Balance(ctx)
		if err != nil {
			return err
		}
		if b.LastCycle == nil || b.LastCycle.Mode != api.BalanceAdvise || b.LastCycle.Measured != 2 {
			return fmt.Errorf("last cycle %+v", b.LastCycle)
		}
		if len(b.Recommendations) != 1 {
			return fmt.Errorf("recommendations %+v (cycle: %+v)", b.Recommendations, b.LastCycle.Hosts)
		}
		rec, seen = b.Recommendations[0], b.LastCycle.At
		return nil
	})
	t.Logf("recommended after %v: %s", time.Since(start), rec.Reason)
	if (rec.VM != "default/busy1" && rec.VM != "default/busy2") || rec.From != "local" || rec.To != "host2" ||
		rec.Reason == "" || !strings.Contains(rec.Reason, "local") || rec.Gain <= 0 || rec.DemandSource != "measured" {
		t.Fatalf("recommendation %+v: want a busy guest from local to host2, measured, with a reason and a gain", rec)
	}
	eventually(t, 10*time.Second, "another advise cycle", func() error {
		b, err := c.Balance(ctx)
		if err != nil {
			return err
		}
		if !b.LastCycle.At.After(seen) {
			return fmt.Errorf("no cycle since %s", seen)
		}
		return nil
	})
	if n := migrations(t, c); n != 0 {
		t.Fatalf("advise mode started %d migrations", n)
	}

	// Automatic: the move is made by live migration.
	t0 := time.Now()
	settings.Mode = api.BalanceAutomatic
	if _, err := c.SetBalance(ctx, settings); err != nil {
		t.Fatal(err)
	}
	_, name := api.SplitKey(rec.VM)
	eventually(t, 60*time.Second, "the recommended vm runs on host2", func() error {
		vm, err := c.GetVM(ctx, name)
		if err != nil {
			return err
		}
		if vm.Spec.Host != "host2" || vm.Status.PowerState != api.PowerRunning || vm.Status.ObservedGeneration != vm.Generation {
			return fmt.Errorf("on %s, %s, observed %d of %d", vm.Spec.Host, vm.Status.PowerState, vm.Status.ObservedGeneration, vm.Generation)
		}
		return nil
	})
	t.Logf("moved by the balancer in %v", time.Since(t0))
	if n := migrations(t, c); n != 1 {
		t.Fatalf("%d migrations, want 1", n)
	}

	// No oscillation: 10 more cycles, no more migrations.
	b, err := c.Balance(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last, cycles := b.LastCycle.At, 0
	eventually(t, 30*time.Second, "10 more cycles", func() error {
		b, err := c.Balance(ctx)
		if err != nil {
			return err
		}
		if b.LastCycle.At.After(last) {
			last = b.LastCycle.At
			cycles++
			if len(b.Recommendations) != 0 {
				t.Errorf("cycle %d recommends %+v", cycles, b.Recommendations)
			}
		}
		if cycles < 10 {
			return fmt.Errorf("%d cycles", cycles)
		}
		t.Logf("after: hosts %+v, spread %.3f", b.LastCycle.Hosts, b.LastCycle.Imbalance)
		return nil
	})
	if n := migrations(t, c); n != 1 {
		t.Errorf("%d migrations after 10 more cycles, want still 1", n)
	}
	for _, n := range []string{"busy1", "busy2"} {
		vm, err := c.GetVM(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]string{true: "host2", false: "local"}[n == name]; vm.Spec.Host != want {
			t.Errorf("%s on %s, want %s", n, vm.Spec.Host, want)
		}
	}
	t.Logf("done in %v", time.Since(start))
	if _, err := c.SetBalance(ctx, api.BalanceSettings{Mode: api.BalanceOff}); err != nil {
		t.Fatal(err)
	}
}

// migrations counts the vm.migrate operations.
func migrations(t *testing.T, c *client.Client) int {
	t.Helper()
	l, err := c.ListOperations(context.Background(), api.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, op := range l.Items {
		if op.Kind == api.OpVMMigrate {
			n++
		}
	}
	return n
}
