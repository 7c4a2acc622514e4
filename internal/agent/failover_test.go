package agent

import (
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/client"
)

// TestAgentFailsOver: an agent told of two servers whose server dies
// reports to the other within a few heartbeats (its heartbeats and a
// watch there), and its VM keeps running without being started again.
func TestAgentFailsOver(t *testing.T) {
	h := newHarness(t)
	other := newControlPlane(t)
	c, err := client.New(client.Config{URL: h.cp.srv.URL, Servers: []string{other.srv.URL}, Token: "host-token"})
	if err != nil {
		t.Fatal(err)
	}
	h.cfg.Client = c
	vm := newVM("web")
	key := vm.Key()
	// Both servers read the same store: both hold the VM.
	h.cp.place(vm)
	other.place(vm)
	h.startAgent()
	h.running(key, 1)
	h.cp.until(5*time.Second, "a heartbeat to the first server", func() bool { return len(h.cp.hostReports) > 0 })

	died := time.Now()
	h.cp.srv.CloseClientConnections()
	h.cp.srv.Close()

	// Within a heartbeat timeout (2s here) and a heartbeat or two.
	other.until(10*time.Second, "heartbeats and a watch at the other server", func() bool {
		return len(other.hostReports) >= 2 && other.watchesMade > 0
	})
	t.Logf("reporting to the other server %s after the first died", time.Since(died).Round(time.Millisecond))
	fake, ok := h.host.VM(vm.UID)
	if !ok || fake.Starts != 1 || fake.PID == 0 {
		t.Fatalf("the VM after the failover: %+v (exists %v), want running, started once", fake, ok)
	}
	if got := c.URL(); got != other.srv.URL {
		t.Fatalf("the agent's client uses %s, want the other server %s", got, other.srv.URL)
	}
}
