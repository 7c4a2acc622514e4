package agent

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/netplane"
)

// fakePlane stands in for the host's dataplane: every port of a state is
// made, but those it is told to fail.
type fakePlane struct {
	mu      sync.Mutex
	applied []int64 // revisions, in order
	resyncs int
	fail    map[string]string
}

func (f *fakePlane) Apply(_ context.Context, st *api.HostNetworkState) (netplane.Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied = append(f.applied, st.Revision)
	res := netplane.Result{Revision: st.Revision, Errors: map[string]string{}}
	for _, p := range st.Ports {
		if why, ok := f.fail[p.Key]; ok {
			res.Errors[p.Key] = why
			continue
		}
		res.Active = append(res.Active, p.Key)
	}
	slices.Sort(res.Active)
	return res, nil
}

func (f *fakePlane) Resync() {
	f.mu.Lock()
	f.resyncs++
	f.mu.Unlock()
}

func (f *fakePlane) revisions() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.applied)
}

// fakeReporter records the port reports.
type fakeReporter struct {
	mu      sync.Mutex
	reports []PortReport
}

func (f *fakeReporter) ReportPorts(_ context.Context, host string, r PortReport) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, r)
	return nil
}

func (f *fakeReporter) last() (PortReport, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reports) == 0 {
		return PortReport{}, false
	}
	return f.reports[len(f.reports)-1], true
}

func netHarness(t *testing.T) (*harness, *fakePlane, *fakeReporter) {
	h := newHarness(t)
	fp, fr := &fakePlane{fail: map[string]string{}}, &fakeReporter{}
	h.cfg.Network, h.cfg.Ports = fp, fr
	return h, fp, fr
}

func (cp *controlPlane) sendNetwork(st *api.HostNetworkState) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.network = st
	cp.broadcastLocked(api.AgentMessage{Type: api.AgentMsgNetwork, Network: st})
	cp.notify()
}

func netState(rev int64, ports ...api.HostPort) *api.HostNetworkState {
	return &api.HostNetworkState{Revision: rev, Underlay: "192.0.2.1",
		Networks: []api.HostNetwork{{Key: "p/a", ID: "000000000a", Type: api.NetworkOverlay, VNI: 7}},
		Ports:    ports}
}

func port(key, id, vm string, nic int, mac string) api.HostPort {
	return api.HostPort{Key: key, ID: id, Network: "p/a", MAC: mac, VM: vm, NIC: nic, PortSecurity: true}
}

// TestNetworkStateOrderAndReports: the newest state is applied, an older
// one that arrives late is not, and the ports made are reported with the
// revision they were made at, errors beside.
func TestNetworkStateOrderAndReports(t *testing.T) {
	h, fp, fr := netHarness(t)
	h.startAgent()
	fp.mu.Lock()
	fp.fail["p/bad"] = "its network cannot be made"
	fp.mu.Unlock()
	h.cp.sendNetwork(netState(5, port("p/x", "00000000x1", "", 0, "52:54:00:00:00:01"), port("p/bad", "00000000x2", "", 0, "52:54:00:00:00:02")))
	h.cp.until(5*time.Second, "revision 5 reported", func() bool {
		r, ok := fr.last()
		return ok && r.Revision == 5
	})
	r, _ := fr.last()
	if !slices.Equal(r.Active, []string{"p/x"}) || r.Errors["p/bad"] == "" {
		t.Fatalf("report %+v", r)
	}
	h.cp.sendNetwork(netState(3)) // an older state, late
	h.cp.sendNetwork(netState(6, port("p/x", "00000000x1", "", 0, "52:54:00:00:00:01")))
	h.cp.until(5*time.Second, "revision 6 applied", func() bool { return slices.Contains(fp.revisions(), 6) })
	if slices.Contains(fp.revisions(), 3) {
		t.Fatalf("an older state was applied: %v", fp.revisions())
	}
	// A restarted agent applies nothing before the server sends a state,
	// then the one it sends.
	h.stopAgent()
	n := len(fp.revisions())
	h.cp.mu.Lock()
	h.cp.network = nil
	h.cp.mu.Unlock()
	h.startAgent()
	time.Sleep(300 * time.Millisecond)
	if len(fp.revisions()) != n {
		t.Fatalf("the restarted agent applied a state before the server sent one: %v", fp.revisions())
	}
}

// errorReports are the VM's reports that carry an error.
func errorReports(cp *controlPlane, key string) []api.VMStatus {
	var out []api.VMStatus
	for _, s := range cp.reportsOf(key) {
		if s.Error != nil {
			out = append(out, s)
		}
	}
	return out
}

// TestVMWaitsForItsPort: a VM whose NIC is on a network starts once its
// port is made, on the port's tap and MAC, and reports no error while it
// waits (the server fails a create on one, and the VM and its port's
// state reach the agent by two messages); a NIC added while it runs is
// plugged in once its port is made, and unplugged when removed.
func TestVMWaitsForItsPort(t *testing.T) {
	h, _, _ := netHarness(t)
	h.startAgent()
	vm := newVM("web")
	vm.Spec.NICs = []api.NIC{{Network: "a", MAC: "52:54:00:00:00:01"}}
	h.cp.place(vm)
	time.Sleep(500 * time.Millisecond)
	if v, _ := h.host.VM(vm.UID); v.PID != 0 {
		t.Fatal("the vm started without its port")
	}
	if errs := errorReports(h.cp, "p/web"); len(errs) != 0 {
		t.Fatalf("the vm reported an error while it waited for its port: %+v", errs[0].Error)
	}
	h.cp.sendNetwork(netState(1, port("p/web-0", "00000000w0", "p/web", 0, "52:54:00:00:00:01")))
	st := h.running("p/web", 1)
	if st.Error != nil {
		t.Fatalf("status %+v", st)
	}
	v, _ := h.host.VM(vm.UID)
	want := []hypervisor.NICConfig{{Network: "p/a", MAC: "52:54:00:00:00:01", Tap: netplane.TapName("00000000w0")}}
	if !slices.Equal(v.NICs, want) {
		t.Fatalf("started with nics %+v, want %+v", v.NICs, want)
	}

	// A second NIC: the spec first, its port after.
	gen := h.cp.setSpec("p/web", func(s *api.VMSpec) {
		s.NICs = append(s.NICs, api.NIC{Network: "a", MAC: "52:54:00:00:00:02"})
	})
	time.Sleep(500 * time.Millisecond)
	if errs := errorReports(h.cp, "p/web"); len(errs) != 0 {
		t.Fatalf("the new nic's wait was reported as an error: %+v", errs[0].Error)
	}
	h.cp.sendNetwork(netState(2, port("p/web-0", "00000000w0", "p/web", 0, "52:54:00:00:00:01"), port("p/web-1", "00000000w1", "p/web", 1, "52:54:00:00:00:02")))
	h.running("p/web", gen)
	h.cp.until(5*time.Second, "the second nic plugged in", func() bool {
		v, _ := h.host.VM(vm.UID)
		return len(v.NICs) == 2 && v.NICs[1].Tap == netplane.TapName("00000000w1")
	})
	if v, _ := h.host.VM(vm.UID); v.Starts != 1 {
		t.Fatalf("the vm was started %d times: plugging a nic restarted it", v.Starts)
	}
	gen = h.cp.setSpec("p/web", func(s *api.VMSpec) { s.NICs = s.NICs[:1] })
	h.running("p/web", gen)
	if v, _ := h.host.VM(vm.UID); len(v.NICs) != 1 {
		t.Fatalf("nics after the removal: %+v", v.NICs)
	}
}

// TestVMPortFailsOrNeverComes: a port the dataplane cannot make fails the
// VM's convergence at once, naming why; a port that never comes fails it
// when the wait is over.
func TestVMPortFailsOrNeverComes(t *testing.T) {
	old := portWait
	portWait = time.Second
	t.Cleanup(func() { portWait = old })
	h, fp, _ := netHarness(t)
	fp.mu.Lock()
	fp.fail["p/bad-0"] = "its network cannot be made"
	fp.mu.Unlock()
	h.startAgent()
	bad, never := newVM("bad"), newVM("never")
	bad.Spec.NICs = []api.NIC{{Network: "a", MAC: "52:54:00:00:00:01"}}
	never.Spec.NICs = []api.NIC{{Network: "a", MAC: "52:54:00:00:00:02"}}
	h.cp.sendNetwork(netState(1, port("p/bad-0", "00000000b0", "p/bad", 0, "52:54:00:00:00:01")))
	start := time.Now()
	h.cp.place(bad)
	h.cp.place(never)
	h.cp.waitStatus("p/bad", 5*time.Second, "the vm whose port cannot be made fails", func(s api.VMStatus) bool {
		return s.Error != nil && strings.Contains(s.Error.Message, "its network cannot be made")
	})
	h.cp.waitStatus("p/never", 5*time.Second, "the vm whose port never comes fails", func(s api.VMStatus) bool {
		return s.Error != nil && strings.Contains(s.Error.Message, "not made on this host yet")
	})
	if waited := time.Since(start); waited < portWait {
		t.Fatalf("the vm failed after %s, before the wait of %s was over", waited, portWait)
	}
	for _, v := range []*api.VM{bad, never} {
		if hv, _ := h.host.VM(v.UID); hv.PID != 0 {
			t.Fatalf("%s started without its port", v.Name)
		}
	}
}
