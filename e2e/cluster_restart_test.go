package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestClusterRollingRestart restarts the three servers one at a time
// (SIGTERM, then started again from its data dir) while clients keep
// creating and deleting VMs, as a careful client does: every create
// carries an Idempotency-Key, and a request whose answer was lost or 503
// is sent again, through the next server. In the end every create was
// carried out once, every delete once: no request lost, none doubled,
// no VM started twice.
func TestClusterRollingRestart(t *testing.T) {
	t.Parallel() // its own network namespaces, bridge and data dirs; no guests
	tc := newTestCluster(t, 3)
	ctx := context.Background()
	uploadKernel(t, tc.s[0].tls(""))
	fleet := tc.startFleet(2)

	type vmRecord struct {
		name    string
		created *api.Operation
		deleted *api.Operation // nil: kept
		retries int
	}
	var (
		mu      sync.Mutex
		records []*vmRecord
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	const workers = 3
	for w := range workers {
		c := tc.s[w].tls("")
		if err := c.SetServers(append([]string{tc.s[w].url()}, tc.urls()...)); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				r := &vmRecord{name: fmt.Sprintf("r%d-%03d", w, n)}
				key := "rolling-" + r.name
				var err error
				r.retries, err = retried(ctx, c, func(cctx context.Context) error {
					op, err := c.CreateVM(cctx, simVM(r.name), client.CreateOptions{IdempotencyKey: key})
					r.created = op
					return err
				})
				if err != nil {
					t.Errorf("create %s: %v", r.name, err)
					return
				}
				mu.Lock()
				records = append(records, r)
				mu.Unlock()
				done, err := waitRetried(ctx, c, r.created.ID)
				if err != nil || done.Status != api.OpSucceeded {
					t.Errorf("create %s: %v %+v", r.name, err, done)
					return
				}
				if n%2 == 1 {
					continue // every other VM is kept
				}
				first := true
				tries, err := retried(ctx, c, func(cctx context.Context) error {
					op, err := c.DeleteVM(cctx, r.name, false)
					// A delete sent again whose first try was carried out
					// finds the VM deleting (conflict) or gone.
					if !first && (client.ErrorCode(err) == api.CodeNotFound || client.ErrorCode(err) == api.CodeConflict) {
						return nil
					}
					first = false
					if err == nil {
						r.deleted = op
					}
					return err
				})
				r.retries += tries
				if err != nil {
					t.Errorf("delete %s: %v", r.name, err)
					return
				}
				if r.deleted == nil {
					r.deleted = &api.Operation{} // carried out by an earlier try
				} else if done, err := waitRetried(ctx, c, r.deleted.ID); err != nil || done.Status != api.OpSucceeded {
					t.Errorf("delete %s: %v %+v", r.name, err, done)
					return
				}
			}
		})
	}

	start := time.Now()
	for i, s := range tc.s {
		time.Sleep(time.Second)
		down := time.Now()
		s.stop()
		time.Sleep(time.Second)
		s.start()
		eventually(t, 30*time.Second, "three healthy servers and a leader after "+s.name+"'s restart", func() error {
			list, err := s.local().ListServers(ctx)
			if err != nil {
				return err
			}
			for _, sv := range list {
				if !sv.Healthy {
					return fmt.Errorf("server %+v", sv)
				}
			}
			if l, _, err := tc.leader(i); err != nil || l < 0 {
				return fmt.Errorf("leader %d %v", l, err)
			}
			return nil
		})
		t.Logf("server %s restarted: back in the control plane %s after it went down", s.name, time.Since(down).Round(time.Millisecond))
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	t.Logf("three restarts in %s", time.Since(start).Round(time.Millisecond))
	if t.Failed() {
		return
	}

	c := tc.s[0].tls("")
	seen, listed := map[string]int{}, 0
	for opts := (api.ListOptions{Limit: 1000}); ; {
		vms, err := c.ListVMs(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, vm := range vms.Items {
			seen[vm.Name]++
		}
		listed += len(vms.Items)
		if opts.Continue = vms.Continue; opts.Continue == "" {
			break
		}
	}
	kept, retries := 0, 0
	for _, r := range records {
		retries += r.retries
		want := 1
		if r.deleted != nil {
			want = 0
		} else {
			kept++
		}
		if seen[r.name] != want {
			t.Errorf("VM %s exists %d times, want %d", r.name, seen[r.name], want)
		}
	}
	if listed != kept {
		t.Errorf("%d VMs exist, %d created and kept", listed, kept)
	}
	t.Logf("%d VMs created, %d of them deleted, %d requests sent again", len(records), len(records)-kept, retries)
	if len(records) < 2*workers {
		t.Errorf("only %d creates during the restarts", len(records))
	}
	eventually(t, 30*time.Second, "the hosts run the kept VMs, each started once", func() error {
		// The counters are written every second: they may trail.
		st := fleet.readStats(t)
		if st.Starts > int64(len(records)) {
			t.Fatalf("the hosts made %d starts for %d created VMs", st.Starts, len(records))
		}
		if st.Starts < int64(len(records)) || st.VMs != kept || st.Running != kept {
			return fmt.Errorf("the hosts made %d starts of %d created VMs and hold %d VMs, %d running, of %d kept", st.Starts, len(records), st.VMs, st.Running, kept)
		}
		return nil
	})
}

// retried sends a request until it is answered other than 503 or with an
// error that shows it never got an answer, moving to the next server
// after each failure, for at most a minute; it returns how many times it
// sent it again.
func retried(ctx context.Context, c *client.Client, send func(context.Context) error) (int, error) {
	deadline := time.Now().Add(time.Minute)
	for try := 0; ; try++ {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := send(cctx)
		cancel()
		code := client.ErrorCode(err)
		if err == nil || (code != "" && code != api.CodeUnavailable) || time.Now().After(deadline) {
			return try, err
		}
		c.Failover()
		time.Sleep(200 * time.Millisecond)
	}
}

// waitRetried waits for an operation, through the next server when the
// one in use goes away.
func waitRetried(ctx context.Context, c *client.Client, id string) (*api.Operation, error) {
	var op *api.Operation
	_, err := retried(ctx, c, func(cctx context.Context) error {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		var err error
		op, err = c.WaitOperation(wctx, id, nil)
		return err
	})
	return op, err
}
