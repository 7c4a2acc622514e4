package agent

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor/hypervisortest"
)

// TestAgentSamplesUsage: the agent samples its running VM into the
// host's history and answers usage streams from it; a restarted agent
// still has it.
func TestAgentSamplesUsage(t *testing.T) {
	h := newHarness(t)
	h.host = hypervisortest.NewHostWith(hypervisortest.HostOptions{Usage: hypervisortest.QEMUUsage()})
	h.cfg.UsageInterval = 50 * time.Millisecond
	vm := newVM("busy")
	h.cp.place(vm)
	h.startAgent()
	h.running(vm.Key(), 1)

	ask := func(id string, q api.UsageQuery) api.UsageAnswer {
		t.Helper()
		h.cp.requestStream(api.StreamRequest{ID: id, Console: "usage", Usage: &q})
		select {
		case c := <-h.cp.streams:
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			var ans api.UsageAnswer
			if err := json.NewDecoder(c).Decode(&ans); err != nil {
				t.Fatalf("reading the usage answer: %v", err)
			}
			return ans
		case <-time.After(5 * time.Second):
			t.Fatal("the agent did not dial back for the usage stream")
		}
		return api.UsageAnswer{}
	}
	now := time.Now()
	q := api.UsageQuery{Kind: "vm", UIDs: []string{vm.UID}, Since: now.Add(-time.Hour), Until: now.Add(time.Hour)}
	var ans api.UsageAnswer
	for try := 0; ; try++ {
		ans = ask("s-vm", q)
		if pts := ans.Series[vm.UID]; len(pts) > 0 && pts[len(pts)-1].Samples >= 3 {
			break
		}
		if try == 50 {
			t.Fatalf("no sampled point: %+v", ans)
		}
		time.Sleep(100 * time.Millisecond)
	}
	pts := ans.Series[vm.UID]
	p := pts[len(pts)-1]
	// The fake's QEMU keeps a CPU busy through its boot and holds at
	// least its 62 MiB base.
	if ans.StepSeconds != 300 || p.CPU <= 0.2 || p.CPUMax > 1.5 || p.MemoryBytes < 62<<20 {
		t.Fatalf("vm point %+v (step %d)", p, ans.StepSeconds)
	}
	host := ask("s-host", api.UsageQuery{Kind: "host", Since: q.Since, Until: q.Until})
	if hp := host.Series["h1"]; len(hp) == 0 || hp[len(hp)-1].MemoryMaxBytes < 62<<20 {
		t.Fatalf("host points %+v", host)
	}
	if bad := ask("s-bad", api.UsageQuery{Kind: "../etc", Since: q.Since, Until: q.Until}); bad.Error == "" {
		t.Errorf("a query of kind ../etc answered %+v", bad)
	}

	h.stopAgent()
	h.cfg.UsageInterval = time.Hour // no new samples: what is read was kept
	h.cp.mu.Lock()
	made := h.cp.watchesMade
	h.cp.mu.Unlock()
	h.startAgent()
	h.cp.until(5*time.Second, "the agent watches again", func() bool { return h.cp.watchesMade > made && len(h.cp.watches) > 0 })
	again := ask("s-again", q)
	if got := again.Series[vm.UID]; len(got) == 0 || got[0].Samples < pts[0].Samples {
		t.Fatalf("after a restart: %+v, before %+v", got, pts)
	}
}
