package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestConcurrentCreates: 50 parallel creates with distinct names and 10
// with one shared name leave exactly 51 VMs; 10 retries with one
// Idempotency-Key leave one VM and one operation.
func TestConcurrentCreates(t *testing.T) {
	requireQEMU(t)
	// 52 one-vcpu VMs on a two-cpu host: overcommit enough to place them.
	srv := startServer(t, t.TempDir(), "--cpu-overcommit", "64")
	c := srv.c
	ctx := context.Background()
	importGuest(t, c)

	stopped := func(name string) api.VMCreate {
		return api.VMCreate{
			Name: name, VCPUs: 1, MemoryMiB: 64, PowerState: api.PowerStopped,
			Boot: api.Boot{Kernel: imgKernel, Initrd: imgInitrd},
		}
	}
	var (
		wg                sync.WaitGroup
		mu                sync.Mutex
		distinctOK        int
		sharedOK          int
		sharedConflict    int
		idemOps           = map[string]int{}
		unexpected        []error
		createdOperations []*api.Operation
	)
	record := func(f func()) { mu.Lock(); f(); mu.Unlock() }
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := c.CreateVM(ctx, stopped(fmt.Sprintf("c-%02d", i)), client.CreateOptions{})
			record(func() {
				if err != nil {
					unexpected = append(unexpected, err)
					return
				}
				distinctOK++
				createdOperations = append(createdOperations, op)
			})
		}()
	}
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := c.CreateVM(ctx, stopped("shared"), client.CreateOptions{})
			record(func() {
				switch {
				case err == nil:
					sharedOK++
					createdOperations = append(createdOperations, op)
				case client.IsConflict(err):
					sharedConflict++
				default:
					unexpected = append(unexpected, err)
				}
			})
		}()
	}
	for range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, err := c.CreateVM(ctx, stopped("idem"), client.CreateOptions{IdempotencyKey: "retry-me-0001"})
			record(func() {
				if err != nil {
					unexpected = append(unexpected, err)
					return
				}
				idemOps[op.ID]++
			})
		}()
	}
	wg.Wait()
	if len(unexpected) > 0 {
		t.Fatalf("unexpected errors: %v", unexpected)
	}
	if distinctOK != 50 || sharedOK != 1 || sharedConflict != 9 {
		t.Fatalf("distinct ok %d (want 50), shared ok %d (want 1), shared conflicts %d (want 9)", distinctOK, sharedOK, sharedConflict)
	}
	if len(idemOps) != 1 {
		t.Fatalf("10 retries with one Idempotency-Key made %d operations: %v", len(idemOps), idemOps)
	}
	vms, err := c.ListAllVMs(ctx, api.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 52 {
		t.Fatalf("%d vms, want 52 (50 distinct, shared, idem): %v", len(vms), names(vms))
	}
	for _, op := range createdOperations {
		waitOK(t, c, op)
	}
	for id := range idemOps {
		waitOK(t, c, &api.Operation{ID: id})
	}
	// Paging through them gives each once.
	seen := map[string]bool{}
	var cont string
	for {
		page, err := c.ListVMs(ctx, api.ListOptions{Limit: 7, Continue: cont})
		if err != nil {
			t.Fatal(err)
		}
		for _, vm := range page.Items {
			if seen[vm.Name] {
				t.Fatalf("%s listed twice", vm.Name)
			}
			seen[vm.Name] = true
		}
		if page.Continue == "" {
			break
		}
		cont = page.Continue
	}
	if len(seen) != 52 {
		t.Fatalf("paging saw %d vms", len(seen))
	}
}
