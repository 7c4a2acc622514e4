package audit

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

func denial(remote, path string) *api.AuditRecord {
	return &api.AuditRecord{Actor: api.AuditActor{Kind: "anonymous"}, Remote: remote, Method: "GET", Path: path,
		Action: "vm.read", Outcome: api.AuditDenied, Status: 401, Message: "invalid, expired or revoked token"}
}

// A flood of refusals of one key costs Each records and one count per
// window; other keys are not affected.
func TestAggregatorFoldsAFlood(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	a := NewAggregator(l, AggregateOptions{Window: time.Hour, Each: 3})
	t.Cleanup(a.Close)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 250 {
				if err := a.Append(t.Context(), "flood", denial("192.0.2.1", fmt.Sprintf("/v1/vms/%d-%d", g, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := a.Append(t.Context(), "other", denial("198.51.100.7", "/v1/vms/x")); err != nil {
		t.Fatal(err)
	}
	if got := len(queryAll(t, l, api.AuditQuery{})); got != 4 {
		t.Errorf("%d records written during the window, want 3 of the flood and 1 other", got)
	}
	a.Close() // ends the windows
	recs := queryAll(t, l, api.AuditQuery{})
	if len(recs) != 5 {
		t.Fatalf("%d records after the window, want 5: %v", len(recs), messages(recs))
	}
	sum := recs[4]
	if sum.Count != 2000-3 || sum.Remote != "192.0.2.1" || sum.Outcome != api.AuditDenied || sum.First.IsZero() || sum.Last.Before(sum.First) {
		t.Errorf("count record %+v: want 1997 refusals from 192.0.2.1 with their times", sum)
	}
	if a.Folded() != 1997 {
		t.Errorf("Folded %d, want 1997", a.Folded())
	}
}

// A window ends by itself: its count is written without another record of
// the key, and the next window starts writing records again.
func TestAggregatorWindowEnds(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	a := NewAggregator(l, AggregateOptions{Window: 100 * time.Millisecond, Each: 1})
	t.Cleanup(a.Close)
	for range 5 {
		if err := a.Append(t.Context(), "k", denial("192.0.2.1", "/v1/vms")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	var recs []*api.AuditRecord
	for time.Now().Before(deadline) {
		if recs = queryAll(t, l, api.AuditQuery{}); len(recs) == 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(recs) != 2 || recs[1].Count != 4 {
		t.Fatalf("records %+v: want one written and a count of 4", recs)
	}
	if err := a.Append(t.Context(), "k", denial("192.0.2.1", "/v1/vms")); err != nil {
		t.Fatal(err)
	}
	if recs = queryAll(t, l, api.AuditQuery{}); len(recs) != 3 || recs[2].Count != 0 {
		t.Errorf("the first record of a new window: %+v, want written as it is", recs)
	}
}

// The keys counted at once are bounded: past MaxKeys new keys share one
// count, so varying the key cannot grow memory or escape the count.
func TestAggregatorMaxKeys(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	a := NewAggregator(l, AggregateOptions{Window: time.Hour, Each: 1, MaxKeys: 10})
	t.Cleanup(a.Close)
	for i := range 1000 {
		if err := a.Append(t.Context(), fmt.Sprint(i), denial(fmt.Sprintf("192.0.2.%d", i%250), "/v1/vms")); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()
	recs := queryAll(t, l, api.AuditQuery{})
	if len(recs) != 12 {
		t.Fatalf("%d records, want 10 keys, the first of the overflow and its count", len(recs))
	}
	if last := recs[11]; last.Count != 989 || last.Remote != "many" {
		t.Errorf("overflow count %+v, want 989 from many", last)
	}
}

// One caller cannot escape folding by varying its keys: past CallerKeys
// its records of new keys share one count of its own, and past
// CallerWrites nothing more of it is written one by one in the window.
// Every record is accounted for, and another caller is not affected.
// (Keys were per route, answer and project alone: one caller varying them
// wrote Each records of every one.)
func TestAggregatorBoundsEachCaller(t *testing.T) {
	l := openLog(t, t.TempDir(), Options{})
	a := NewAggregator(l, AggregateOptions{Window: time.Hour, Each: 10, CallerKeys: 5, CallerWrites: 20})
	t.Cleanup(a.Close)
	const keys, rounds = 100, 3
	for range rounds {
		for i := range keys {
			r := denial("192.0.2.1", fmt.Sprintf("/v1/vms/%d", i))
			r.Action = fmt.Sprintf("act%d.delete", i%7)
			if err := a.AppendAs(t.Context(), "c1", fmt.Sprint("c1|", i), r); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := len(queryAll(t, l, api.AuditQuery{})); got != 20 {
		t.Errorf("%d records of one caller written during the window, want its 20", got)
	}
	if err := a.AppendAs(t.Context(), "c2", "c2|0", denial("198.51.100.7", "/v1/vms/x")); err != nil {
		t.Fatal(err)
	}
	if got := len(queryAll(t, l, api.AuditQuery{})); got != 21 {
		t.Errorf("another caller's first record: %d records, want it written (21)", got)
	}
	a.Close()
	recs := queryAll(t, l, api.AuditQuery{})
	if len(recs) > 21+5+1 {
		t.Errorf("%d records after the window, want at most 21, a count of each of the caller's 5 keys and one of its own", len(recs))
	}
	var accounted int64
	var own *api.AuditRecord
	for _, r := range recs {
		if r.Remote == "192.0.2.1" {
			accounted += max(r.Count, 1)
		}
		if r.Count > 0 && r.Action == "audit.overflow" {
			own = r
		}
	}
	if accounted != keys*rounds {
		t.Errorf("the log accounts for %d of the caller's %d records", accounted, keys*rounds)
	}
	if own == nil || !strings.Contains(own.Message, "one caller") || !strings.Contains(own.Message, "act3.delete (denied 401)") ||
		own.Actor.Kind != "anonymous" || own.Remote != "192.0.2.1" {
		t.Errorf("the caller's own count %+v: want it to name the caller, its address and the actions it folded", own)
	}
}
