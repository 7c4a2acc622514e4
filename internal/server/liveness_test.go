package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// TestLivenessUnderConcurrentWrites: a host goes silent while its VMs are
// being written by others (labels here; operations or reports in life).
// Every write of liveness that loses such a race is done again on the
// VM's newest version: in the end the host is not ready and every VM on it
// is unknown, none left showing its last state.
func TestLivenessUnderConcurrentWrites(t *testing.T) {
	t.Parallel()
	// The liveness loop of the server never judges on its own here: the
	// test calls its check with a clock past the timeout.
	e := newEnv(t, Config{HeartbeatTimeout: time.Hour})
	ctx := context.Background()
	tok := e.ctlJoin(ctx, "lost", ctlHostStatus(64, 64<<10), false)
	pa := e.super.WithProject("pa")
	const n = 12
	var keys []string
	for i := range n {
		name := fmt.Sprintf("l%d", i)
		ctlCreate(t, pa, name, "lost", 1, 64)
		keys = append(keys, "pa/"+name)
	}
	for _, k := range keys {
		e.ctlObserved(t, tok, k)
	}
	later := func() time.Time { return time.Now().Add(2 * time.Hour) }

	for round := range 5 {
		// The host and its VMs are back: ready, running.
		h, _ := e.s.hosts.Get("lost")
		hn := store.Clone(h)
		hn.Status.State = api.HostReady
		if _, err := e.s.hosts.Update(ctx, "lost", hn, 0); err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			ctlUpdateVM(t, e.s, k, func(vm *api.VM) { vm.Status.PowerState, vm.Status.Reason = api.PowerRunning, "" })
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 3 {
			wg.Go(func() {
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					ctlUpdateVM(t, e.s, keys[(i*3+w)%n], func(vm *api.VM) {
						vm.Labels = map[string]string{"touched": fmt.Sprint(i)}
					})
				}
			})
		}
		time.Sleep(20 * time.Millisecond)
		e.s.ctl.Liveness.Check(ctx, later())
		close(stop)
		wg.Wait()
		// One more round of the loop, with nobody else writing.
		e.s.ctl.Liveness.Check(ctx, later())
		if h, _ := e.s.hosts.Get("lost"); h.Status.State != api.HostNotReady {
			t.Fatalf("round %d: host lost is %s, want notready", round, h.Status.State)
		}
		for _, k := range keys {
			if vm, _ := e.s.vms.Get(k); vm.Status.PowerState != api.PowerUnknown {
				t.Errorf("round %d: vm %s on the silent host shows %s, want unknown", round, k, vm.Status.PowerState)
			}
		}
		if t.Failed() {
			return
		}
	}
}

// ctlUpdateVM changes a VM in the store, again on its newest version when
// another write got there first.
func ctlUpdateVM(t *testing.T, s *Server, key string, change func(*api.VM)) {
	t.Helper()
	for range 100 {
		cur, ok := s.vms.Get(key)
		if !ok {
			t.Errorf("vm %s not found", key)
			return
		}
		next := store.Clone(cur)
		change(next)
		_, err := s.vms.Update(context.Background(), key, next, cur.Version)
		if err == nil {
			return
		}
		if !errors.Is(err, store.ErrConflict) {
			t.Errorf("updating vm %s: %v", key, err)
			return
		}
	}
	t.Errorf("updating vm %s: it kept changing", key)
}
