package ops

import (
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// Operation ids sort in the order they were made, also when many are made
// in one millisecond and from many goroutines, and their creation times
// sort the same way.
func TestOperationIDsSortByCreation(t *testing.T) {
	uuid7 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	const n = 5000
	ids := make([]string, 0, n)
	prev := ""
	for range n {
		op := NewOperation("vm.start", api.Ref{Kind: "vm", Name: "v"}, nil)
		if !uuid7.MatchString(op.ID) {
			t.Fatalf("id %q is not a version 7 UUID", op.ID)
		}
		if op.ID <= prev {
			t.Fatalf("id %q made after %q sorts before it", op.ID, prev)
		}
		prev = op.ID
		ids = append(ids, op.ID)
	}

	var mu sync.Mutex
	var wg sync.WaitGroup
	type made struct {
		id string
		at int64
	}
	var all []made
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				op := NewOperation("vm.stop", api.Ref{Kind: "vm", Name: "v"}, nil)
				mu.Lock()
				all = append(all, made{op.ID, op.CreatedAt.UnixNano()})
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	sort.Slice(all, func(i, j int) bool { return all[i].id < all[j].id })
	seen := map[string]bool{}
	for i, m := range all {
		if seen[m.id] {
			t.Fatalf("id %q made twice", m.id)
		}
		seen[m.id] = true
		if i > 0 && m.at < all[i-1].at {
			t.Errorf("id %q sorts after %q but was made before it", m.id, all[i-1].id)
		}
	}
}

// An operation id tells when it was made; other strings are no ids.
func TestIDTime(t *testing.T) {
	id, made := NewID()
	got, ok := IDTime(id)
	if !ok || !got.Equal(made.Truncate(time.Millisecond)) {
		t.Fatalf("IDTime(%s) = %v, %v; want %v", id, got, ok, made.Truncate(time.Millisecond))
	}
	for _, bad := range []string{"", "op1", api.NewUID(), strings.ToUpper(id), id + "0", id[:35], strings.Replace(id, "-", "x", 1),
		"../../etc/passwd-0000-7000-8000-000000000000"} {
		if _, ok := IDTime(bad); ok {
			t.Errorf("IDTime(%q) took it for an operation id", bad)
		}
	}
}

// Only an id made about now may name an operation the index does not
// hold yet: any other the index lacks is not looked for in the store.
func TestOnlyNewIDsAreLookedForInTheStore(t *testing.T) {
	id, made := NewID()
	for _, c := range []struct {
		now  time.Time
		want bool
	}{
		{made, true},
		{made.Add(30 * time.Second), true},
		{made.Add(-30 * time.Second), true}, // the other server's clock is ahead
		{made.Add(2 * time.Minute), false},
		{made.Add(-2 * time.Minute), false},
		{made.Add(24 * time.Hour), false},
	} {
		if got := mayBeNew(id, c.now); got != c.want {
			t.Errorf("id made at %v, asked at %v: looked for %v, want %v", made, c.now, got, c.want)
		}
	}
	if mayBeNew(api.NewUID(), made) || mayBeNew("nope", made) {
		t.Error("a string that is no operation id would be looked for")
	}
}
