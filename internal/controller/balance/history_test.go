package balance

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// askedDemand answers the VMs it knows and records which it was asked.
type askedDemand struct {
	known map[string]api.PlanUsage
	asked []string
}

func (f *askedDemand) VMDemand(_ context.Context, vms []*api.VM) (map[string]api.PlanUsage, []string, error) {
	out := map[string]api.PlanUsage{}
	for _, v := range vms {
		f.asked = append(f.asked, v.Key())
		if u, ok := f.known[v.Key()]; ok {
			out[v.Key()] = u
		}
	}
	return out, nil, nil
}

// TestRecentUsesHistoryThenFallback: each host is asked once for all its
// VMs; a VM with history is taken at its mean over the window; one with
// none, or on a host whose history cannot be read, is asked of the
// fallback, and only those are.
func TestRecentUsesHistoryThenFallback(t *testing.T) {
	vm := func(name, host string) *api.VM {
		return &api.VM{Meta: api.Meta{Name: name, Project: "p"}, Spec: api.VMSpec{Host: host}}
	}
	fb := &askedDemand{known: map[string]api.PlanUsage{"p/new": {CPU: 0.5, MemoryMiB: 64}, "p/broken": {CPU: 2, MemoryMiB: 32}}}
	var windows []time.Duration
	asked := map[string][]string{}
	r := &Recent{
		Read: func(_ context.Context, host string, vms []*api.VM, w time.Duration) (map[string]HistoryMean, error) {
			windows = append(windows, w)
			for _, v := range vms {
				asked[host] = append(asked[host], v.Name)
			}
			if host == "h2" {
				return nil, errors.New("host not answering")
			}
			return map[string]HistoryMean{"p/old": {CPU: 1.5, MemoryBytes: 512 << 20, Points: 3}, "p/new": {}}, nil
		},
		Fallback: fb,
		Parallel: 1,
	}
	got, notes, err := r.VMDemand(context.Background(), []*api.VM{vm("old", "h1"), vm("new", "h1"), vm("broken", "h2")})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]api.PlanUsage{"p/old": {CPU: 1.5, MemoryMiB: 512}, "p/new": {CPU: 0.5, MemoryMiB: 64}, "p/broken": {CPU: 2, MemoryMiB: 32}}
	if len(got) != len(want) {
		t.Fatalf("demand %v, want %v", got, want)
	}
	for k, u := range want {
		if got[k] != u {
			t.Errorf("%s: %+v, want %+v", k, got[k], u)
		}
	}
	if len(fb.asked) != 2 || fb.asked[0] != "p/broken" || fb.asked[1] != "p/new" {
		t.Errorf("the fallback was asked %v, want the VMs without history", fb.asked)
	}
	if len(notes) != 1 {
		t.Errorf("notes %v, want the unreadable history named", notes)
	}
	if len(asked) != 2 || len(asked["h1"]) != 2 || len(asked["h2"]) != 1 {
		t.Errorf("hosts asked %v, want h1 once for old and new, h2 once for broken", asked)
	}
	for _, w := range windows {
		if w != 15*time.Minute {
			t.Errorf("window %v, want 15m by default", w)
		}
	}
}
