package agent

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/netplane"
)

// The host's network: the server sends, on the agent's watch, the whole
// part of the network state this host needs (api.HostNetworkState)
// whenever any of it changes. One loop makes the host's dataplane match
// the newest state (netplane), tells the server which ports it made
// active, and wakes the VMs whose NICs wait for their ports. A VM's NIC on
// a network attaches to its port's tap, and only once the port is active.

// Dataplane makes the host's network match a state (netplane.Plane).
type Dataplane interface {
	Apply(ctx context.Context, st *api.HostNetworkState) (netplane.Result, error)
	Resync()
}

// PortReport says which of the host's ports the agent made, as of the
// state of Revision; the host's other ports are down.
type PortReport struct {
	Revision int64
	Active   []string          // port keys
	Errors   map[string]string // port key -> what could not be made
}

// PortReporter tells the server which ports are made.
type PortReporter interface {
	ReportPorts(ctx context.Context, host string, r PortReport) error
}

// Defaults of the network loop.
const (
	netResyncInterval = 2 * time.Minute // the dataplane is read back and mended
	netRetryMin       = time.Second
	netRetryMax       = 30 * time.Second
)

// netLoop applies the newest network state and reports its ports.
type netLoop struct {
	a   *Agent
	dp  Dataplane
	rep PortReporter

	mu      sync.Mutex
	latest  *api.HostNetworkState
	applied *api.HostNetworkState // the last state applied
	result  netplane.Result       // of applying it
	kick    chan struct{}

	resync time.Duration
}

func newNetLoop(a *Agent, dp Dataplane, rep PortReporter) *netLoop {
	return &netLoop{a: a, dp: dp, rep: rep, kick: make(chan struct{}, 1), resync: netResyncInterval}
}

// update hands the loop a state from the watch; one older than the newest
// it has is ignored.
func (n *netLoop) update(st *api.HostNetworkState) {
	n.mu.Lock()
	if n.latest != nil && st.Revision < n.latest.Revision {
		n.mu.Unlock()
		n.a.log.Debug("ignoring an older network state", "revision", st.Revision, "have", n.latest.Revision)
		return
	}
	n.latest = st
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// run applies states until ctx ends. Nothing is applied before the first
// state arrives: a restarted agent leaves the dataplane as it is until the
// server says what it should be.
func (n *netLoop) run(ctx context.Context) {
	resync := time.NewTicker(n.resync)
	defer resync.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	backoff := netRetryMin
	var reported int64 = -1
	for {
		full := false
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
		case <-retry.C:
		case <-resync.C:
			full = true
		}
		n.mu.Lock()
		st := n.latest
		n.mu.Unlock()
		if st == nil {
			continue
		}
		if full {
			n.dp.Resync()
		}
		res, err := n.dp.Apply(ctx, st)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			n.a.log.Warn("making the host's network", "revision", st.Revision, "err", err, "in", backoff)
			retry.Reset(backoff)
			backoff = min(2*backoff, netRetryMax)
		} else {
			backoff = netRetryMin
		}
		if res.Changed > 0 {
			n.a.log.Info("host network changed", "revision", st.Revision, "changes", res.Changed, "took", res.Took, "what", res.Changes)
		}
		n.mu.Lock()
		changed := n.applied == nil || n.applied.Revision != st.Revision || !slices.Equal(n.result.Active, res.Active)
		n.applied, n.result = st, res
		n.mu.Unlock()
		if changed {
			n.a.wakeWorkers()
		}
		if n.rep != nil && (reported != st.Revision || err != nil || changed) {
			rep := PortReport{Revision: st.Revision, Active: res.Active, Errors: res.Errors}
			if rep.Active == nil {
				rep.Active = []string{}
			}
			if rerr := n.rep.ReportPorts(ctx, n.a.cfg.Host, rep); rerr != nil {
				n.a.log.Warn("reporting ports", "revision", st.Revision, "err", rerr)
				n.a.checkRevoked(rerr)
				retry.Reset(backoff)
			} else {
				reported = st.Revision
			}
		}
	}
}

// port finds the active port of a VM's NIC; when the port is not made,
// why says what the dataplane could not do, "" while it is not made yet
// (the state naming it has not arrived or is being applied).
func (n *netLoop) port(vmKey string, nic int, portKey string) (p api.HostPort, ok bool, why string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.applied == nil {
		return api.HostPort{}, false, ""
	}
	for _, p := range n.applied.Ports {
		if (portKey != "" && p.Key == portKey) || (portKey == "" && p.VM == vmKey && p.NIC == nic) {
			if _, ok := slices.BinarySearch(n.result.Active, p.Key); ok {
				return p, true, ""
			}
			return api.HostPort{}, false, n.result.Errors[p.Key]
		}
	}
	return api.HostPort{}, false, ""
}

// portWait is how long a VM waits for the ports of its NICs to be made
// before its convergence fails: the VM and its ports reach the agent by
// two messages, and the dataplane takes a moment to make a port.
var portWait = time.Minute

// portPendingError: a NIC's port is not made on this host yet, and
// nothing says it cannot be; the convergence waits for it (portWait).
type portPendingError struct {
	nic     int
	network string
}

func (e *portPendingError) Error() string {
	return fmt.Sprintf("nic %d: its port on network %s is not made on this host yet", e.nic, e.network)
}

// nicConfigs resolves a VM's NICs on this host: a user-mode NIC as it is,
// a NIC on a network to its port's tap and MAC. A NIC whose port is not
// made here yet makes the convergence wait (portPendingError), tried again
// when the network changes; one the dataplane failed to make fails it.
func (a *Agent) nicConfigs(vm *api.VM) ([]hypervisor.NICConfig, error) {
	var out []hypervisor.NICConfig
	for i, nic := range vm.Spec.NICs {
		if nic.Network == "" || nic.Network == api.NetworkUser {
			out = append(out, hypervisor.NICConfig{Network: nic.Network, MAC: nic.MAC, Model: nic.Model})
			continue
		}
		if a.net == nil {
			return nil, fmt.Errorf("nic %d: network %s: this host's agent makes no networks (it runs without root, or its dataplane failed to start)", i, nic.Network)
		}
		p, ok, why := a.net.port(vm.Key(), i, nicPortKey(vm, i))
		if !ok && why != "" {
			return nil, fmt.Errorf("nic %d: its port on network %s cannot be made on this host: %s", i, nic.Network, why)
		}
		if !ok {
			return nil, &portPendingError{nic: i, network: nic.Network}
		}
		out = append(out, hypervisor.NICConfig{Network: p.Network, MAC: p.MAC, Tap: netplane.TapName(p.ID), Model: nic.Model})
	}
	return out, nil
}

// nicPortKey is the key of the port a VM's NIC names, "" when it names
// none (the port is then found by the VM and the NIC's index).
func nicPortKey(vm *api.VM, i int) string {
	if p := vm.Spec.NICs[i].Port; p != "" {
		return api.Key(vm.Project, p)
	}
	return ""
}

// ClientReporter reports ports to the server through the agent's client
// (PUT /v1/agent/hosts/{name}/ports).
type ClientReporter struct{ C *client.Client }

// ReportPorts sends the report.
func (r ClientReporter) ReportPorts(ctx context.Context, host string, rep PortReport) error {
	_, err := r.C.ReportPorts(ctx, host, api.PortReport{Revision: rep.Revision, Active: rep.Active, Errors: rep.Errors})
	return err
}

// syncNICs plugs a running VM's network NICs in and out to match its
// spec, when the driver can.
func (w *worker) syncNICs(ctx context.Context, h *hypervisor.Handle, nics []hypervisor.NICConfig) error {
	np, ok := w.a.driver.(hypervisor.NICPlugger)
	if !ok {
		return nil // the NICs change at its next start
	}
	if err := np.SetNICs(ctx, h, nics); err != nil {
		return fmt.Errorf("plugging nics: %w", err)
	}
	return nil
}

// wakeWorkers makes the workers whose last convergence failed try again
// now: the port one waited for may be made.
func (a *Agent) wakeWorkers() {
	a.mu.Lock()
	ws := make([]*worker, 0, len(a.workers))
	for _, w := range a.workers {
		ws = append(ws, w)
	}
	a.mu.Unlock()
	for _, w := range ws {
		w.networkChanged()
	}
}

// networkChanged wakes the worker, and makes a failed convergence due.
func (w *worker) networkChanged() {
	w.netDue.Store(true)
	select {
	case w.kick <- struct{}{}:
	default:
	}
}
