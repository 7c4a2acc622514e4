package store

import (
	"slices"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestWalkGoesRoundTheRing: a walk visits every object once, in name
// order from its start, wrapping past the last name to the first, and
// stops when told to.
func TestWalkGoesRoundTheRing(t *testing.T) {
	ctx := testCtx(t)
	s := openStore(t, Config{DataDir: t.TempDir(), Logger: testLogger(t)})
	for _, n := range []string{"b", "d", "f", "h"} {
		if _, err := s.vms.Create(ctx, n, newVM(n)); err != nil {
			t.Fatal(err)
		}
	}
	walk := func(from string, stopAfter int) []string {
		var got []string
		s.vms.Walk(from, func(vm *api.VM) bool {
			got = append(got, vm.Name)
			return len(got) < stopAfter
		})
		return got
	}
	for _, tc := range []struct {
		from  string
		limit int
		want  []string
	}{
		{"", 100, []string{"b", "d", "f", "h"}},
		{"a", 100, []string{"b", "d", "f", "h"}},
		{"d", 100, []string{"d", "f", "h", "b"}},
		{"e", 100, []string{"f", "h", "b", "d"}},
		{"z", 100, []string{"b", "d", "f", "h"}},
		{"e", 3, []string{"f", "h", "b"}},
		{"e", 1, []string{"f"}},
		{"g", 2, []string{"h", "b"}},
	} {
		if got := walk(tc.from, tc.limit); !slices.Equal(got, tc.want) {
			t.Errorf("walk from %q, %d at most: %v, want %v", tc.from, tc.limit, got, tc.want)
		}
	}
}
