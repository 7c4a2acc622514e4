package store

import (
	"encoding/json"
	"fmt"
	"sync"
	"testing"
)

// TestBarrier: what another client wrote before a Barrier call is in the
// index when it returns, and callers at the same time share quorum reads;
// a closed store refuses.
func TestBarrier(t *testing.T) {
	ctx := testCtx(t)
	cfg := embeddedConfig(t)
	s := openStore(t, cfg)
	raw := rawClient(t, s.Store, cfg)
	for i := range 20 {
		name := fmt.Sprintf("vm-%d", i)
		b, _ := json.Marshal(newVM(name))
		if _, err := raw.Put(ctx, s.vms.Key(name), string(b)); err != nil {
			t.Fatal(err)
		}
		if err := s.Barrier(ctx); err != nil {
			t.Fatalf("barrier: %v", err)
		}
		if _, ok := s.vms.Get(name); !ok {
			t.Fatalf("%s, written before the barrier, is not in the index after it", name)
		}
	}

	before := s.bar.reads.Load()
	const callers = 200
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range callers {
		wg.Go(func() {
			<-start
			if err := s.Barrier(ctx); err != nil {
				t.Errorf("barrier: %v", err)
			}
		})
	}
	close(start)
	wg.Wait()
	reads := s.bar.reads.Load() - before
	t.Logf("%d concurrent barriers made %d quorum reads", callers, reads)
	if reads >= callers/4 {
		t.Errorf("%d concurrent barriers made %d quorum reads: they do not share them", callers, reads)
	}

	s.Close()
	if err := s.Barrier(ctx); err == nil {
		t.Error("a closed store's barrier passed")
	}
}
