package server

import (
	"context"
	"fmt"
	"hash/fnv"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
)

// TestCreatesAndResizesInOneProject: creates and resizes run at once in a
// project with a quota, on VMs whose locks share a stripe, so that each
// holds one of the two locks the other needs at some moment. They all end.
func TestCreatesAndResizesInOneProject(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	if _, err := e.super.SetQuota(ctx, "pa", api.Quota{VMs: ptr[int64](1000), VCPUs: ptr[int64](100000)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.vms.Update(ctx, "pa/vm1", stopped(e.s, "pa/vm1"), 0); err != nil {
		t.Fatal(err)
	}
	stripe := func(key string) uint32 {
		h := fnv.New32a()
		h.Write([]byte(key))
		return h.Sum32() % uint32(ops.LockStripes)
	}
	const workers, each = 4, 40
	var names []string
	for i := 0; len(names) < workers*each; i++ {
		if n := fmt.Sprintf("c%d", i); stripe(api.Key("pa", n)) == stripe("pa/vm1") {
			names = append(names, n)
		}
	}
	member := e.as(api.RoleMember, "pa")
	done := make(chan struct{})
	errs := make(chan error, 2*workers*each)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for _, n := range names[w*each : (w+1)*each] {
				_, err := member.CreateVM(ctx, api.VMCreate{Name: n, VCPUs: 1, MemoryMiB: 64, Host: "h1",
					Disks: []api.Disk{{Image: "img"}}}, client.CreateOptions{})
				if err != nil {
					errs <- fmt.Errorf("create %s: %w", n, err)
				}
			}
		})
		wg.Go(func() {
			for i := range each {
				if _, err := member.ReconfigureVM(ctx, "vm1", api.VMReconfigure{VCPUs: 1 + i%2}, client.VMActionOptions{}); err != nil {
					errs <- fmt.Errorf("resize vm1: %w", err)
				}
			}
		})
	}
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		// The server's loops are stuck too and its cleanup would never
		// end: a panic outside the test's goroutine ends the process now.
		buf := make([]byte, 1<<20)
		msg := fmt.Sprintf("creates and resizes in one project deadlocked:\n%s", buf[:runtime.Stack(buf, true)])
		go func() { panic(msg) }()
		select {}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
