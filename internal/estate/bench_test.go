package estate_test

// Measurements of the estate manager on the real path: an embedded etcd
// store, the collections the server registers, the registry's providers,
// a sealed credential, and a vcsim (or libvirt test driver) on the other
// end. They run only when asked (docs/BENCHMARKS.md, "Connected estates"):
//
//	go test -run '^$' -bench 'BenchmarkEstate' -benchtime 1x -count=1 -v -timeout 60m ./internal/estate/
//	POLYVISOR_BENCH_ESTATE=1 go test -run 'TestEstateBench' -v -timeout 60m ./internal/estate/
//
// (-v keeps the tables: without it go test cuts a benchmark's log short.)
// POLYVISOR_BENCH_VMS (default 5000), POLYVISOR_BENCH_ROUNDS (3),
// POLYVISOR_BENCH_CHANGES (50), POLYVISOR_BENCH_LARGE_VMS (1000) and
// POLYVISOR_BENCH_LARGE_CHANGES (10) change the sizes. TestEstateSmoke
// runs in the normal suite: 200 VMs and 5 changes, checking what is
// mirrored, never how fast.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/methods"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/provider/registry"
	"github.com/polyvisor/polyvisor/internal/store"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// The target of the first sync: at most this many times a plain govmomi
// listing of the same VMs.
const benchSyncTarget = 1.5

func BenchmarkEstateFirstSync(b *testing.B) { benchFirstSync(b) }

func BenchmarkEstateChangeLatency(b *testing.B) {
	b.Run("vsphere", func(b *testing.B) { benchLatencyVSphere(b, 0, benchChanges(b)) })
	b.Run("vsphere-large", func(b *testing.B) { benchLatencyVSphere(b, benchLargeVMs(b), benchLargeChanges(b)) })
	b.Run("libvirt", func(b *testing.B) { benchLatencyLibvirt(b, benchChanges(b)) })
}

// TestEstateBench runs the same measurements as the benchmarks, with
// POLYVISOR_BENCH_ESTATE=1.
func TestEstateBench(t *testing.T) {
	if !benchEnabled(t) {
		t.Skip("set POLYVISOR_BENCH_ESTATE=1 (or run -bench BenchmarkEstate) to measure connected estates")
	}
	t.Run("FirstSync", func(t *testing.T) { benchFirstSync(t) })
	t.Run("ChangeLatency/vsphere", func(t *testing.T) { benchLatencyVSphere(t, 0, benchChanges(t)) })
	t.Run("ChangeLatency/vsphere-large", func(t *testing.T) { benchLatencyVSphere(t, benchLargeVMs(t), benchLargeChanges(t)) })
	t.Run("ChangeLatency/libvirt", func(t *testing.T) { benchLatencyLibvirt(t, benchChanges(t)) })
}

// The sizes of the latency measurements: N changes on the default vcsim
// and on libvirt; fewer on the large vcsim, where vcsim's own cost of a
// change grows with the estate (see docs/BENCHMARKS.md).
func benchChanges(tb testing.TB) int { return benchEnvInt(tb, "POLYVISOR_BENCH_CHANGES", 50) }

func benchLargeVMs(tb testing.TB) int { return benchEnvInt(tb, "POLYVISOR_BENCH_LARGE_VMS", 1000) }

func benchLargeChanges(tb testing.TB) int {
	return benchEnvInt(tb, "POLYVISOR_BENCH_LARGE_CHANGES", 10)
}

// benchSyncResult is one round of a first sync.
type benchSyncResult struct {
	total     time.Duration // Run started -> connected and every VM in the index
	firstVM   time.Duration // Run started -> first VM in the index
	connected time.Duration // Run started -> provider status connected
	mem       *benchMem
	retained  int64 // heap in use after the manager stopped and a GC, minus before
}

// benchSyncRound makes a fresh store, stores the provider and its sealed
// password, starts a Manager and times its first sync of sim.
func benchSyncRound(tb testing.TB, sim *benchSim, ids map[string]bool) benchSyncResult {
	tb.Helper()
	n := len(ids)
	env := benchOpenEnv(tb, tb.TempDir())
	defer env.close()
	env.addProvider(tb, "vc", sim.spec(), benchSimPass)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := benchFollowSync(ctx, env, "vc", n)

	mem := benchMemStart()
	start := time.Now()
	env.start(tb)
	first, all, conn := w.wait(tb, 10*time.Minute)
	mem.end()
	end := all
	if conn.After(end) {
		end = conn
	}
	res := benchSyncResult{total: end.Sub(start), firstVM: first.Sub(start), connected: conn.Sub(start), mem: mem}
	env.stop()

	// What the index holds is the provider's inventory, each VM once.
	got := env.providerVMs("vc")
	if len(got) != n || env.vms.Len() != n {
		tb.Fatalf("the store holds %d vms of the provider (%d in all), want %d", len(got), env.vms.Len(), n)
	}
	for id, vm := range got {
		if !ids[id] {
			tb.Fatalf("vm %s has native id %q, not a vcsim vm", vm.Name, id)
		}
	}
	p, _ := env.providers.Get("vc")
	if p.Status.Inventory.VMs != n {
		tb.Fatalf("provider status counts %d vms, want %d", p.Status.Inventory.VMs, n)
	}
	res.retained = benchHeapInuse() - int64(mem.before.HeapInuse)
	return res
}

// benchPlainRound lists the VMs with plain govmomi: log in, create a
// container view of the root folder, retrieve the VMs' properties. server
// is how long vcsim took to answer the retrieval (until its first byte:
// vcsim encodes the whole answer before it writes any of it); the rest of
// retrieve is the transfer and govmomi decoding it.
func benchPlainRound(tb testing.TB, sim *benchSim, n int) (total, retrieve, server time.Duration, mem *benchMem) {
	tb.Helper()
	ctx := context.Background()
	mem = benchMemStart()
	start := time.Now()
	c, err := govmomi.NewClient(ctx, sim.loginURL(), true)
	benchMust(tb, err)
	v, err := view.NewManager(c.Client).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	benchMust(tb, err)
	rt := &benchTimingRT{base: c.Client.Client.Transport}
	c.Client.Client.Transport = rt
	rstart := time.Now()
	var vms []mo.VirtualMachine
	benchMust(tb, v.Retrieve(ctx, []string{"VirtualMachine"}, benchVMProps, &vms))
	total, retrieve = time.Since(start), time.Since(rstart)
	mem.end()
	c.Client.Client.Transport = rt.base
	if len(vms) != n {
		tb.Fatalf("govmomi lists %d vms, want %d", len(vms), n)
	}
	_ = v.Destroy(ctx)
	_ = c.Logout(ctx)
	return total, retrieve, rt.last, mem
}

// benchTimingRT times round trips until the response's first byte.
type benchTimingRT struct {
	base http.RoundTripper
	last time.Duration
}

func (t *benchTimingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	res, err := t.base.RoundTrip(r)
	t.last = time.Since(start)
	return res, err
}

// benchProviderRound connects the vsphere provider and reads its
// Inventory: the provider's share of a first sync.
func benchProviderRound(tb testing.TB, sim *benchSim, n int) (time.Duration, *benchMem) {
	tb.Helper()
	ctx := context.Background()
	p, err := registry.New("vsphere", provider.Config{Name: "vc", URL: sim.url, Username: benchSimUser, Password: benchSimPass, CACert: sim.ca}, benchLogger(tb))
	benchMust(tb, err)
	mem := benchMemStart()
	start := time.Now()
	benchMust(tb, p.Connect(ctx))
	inv, err := p.Inventory(ctx)
	benchMust(tb, err)
	d := time.Since(start)
	mem.end()
	_ = p.Close()
	if len(inv.VMs) != n {
		tb.Fatalf("inventory has %d vms, want %d", len(inv.VMs), n)
	}
	return d, mem
}

// benchFirstSync times a Manager's first full sync of a vcsim of 5,000
// VMs against a plain govmomi listing of them, alternately, and reports
// the medians.
func benchFirstSync(tb testing.TB) {
	n := benchEnvInt(tb, "POLYVISOR_BENCH_VMS", 5000)
	rounds := benchEnvInt(tb, "POLYVISOR_BENCH_ROUNDS", 3)
	sim := benchGrowSim(tb, n)
	ids := map[string]bool{}
	for _, vm := range sim.vms(tb, "name") {
		ids[vm.Self.Value] = true
	}
	warn0 := benchWarnings.Load()
	tb.Logf("load average before the rounds: %s", benchLoadAvg())

	var syncT, firstT, connT, plainT, retrT, serverT, provT []time.Duration
	var syncAlloc, syncPeak, syncHWM, syncMallocs, syncInuse, retained, rssStart []uint64
	var plainAlloc, plainPeak, plainHWM, plainMallocs []uint64
	var provAlloc, provPeak []uint64
	for r := range rounds {
		s := benchSyncRound(tb, sim, ids)
		total, retrieve, server, pm := benchPlainRound(tb, sim, n)
		pd, vm := benchProviderRound(tb, sim, n)
		tb.Logf("round %d: sync %s (first vm at %s, connected at %s; alloc %.0f MiB, peak heap %.0f MiB, VmHWM %.0f MiB, %d GCs) | "+
			"plain %s (retrieve %s, of which vcsim answering %s; alloc %.0f MiB, peak heap %.0f MiB, VmHWM %.0f MiB) | provider Connect+Inventory %s (alloc %.0f MiB)",
			r+1, benchMs(s.total), benchMs(s.firstVM), benchMs(s.connected), benchMiB(s.mem.TotalAlloc), benchMiB(s.mem.PeakHeap), benchMiB(s.mem.HWM), s.mem.NumGCDuring,
			benchMs(total), benchMs(retrieve), benchMs(server), benchMiB(pm.TotalAlloc), benchMiB(pm.PeakHeap), benchMiB(pm.HWM),
			benchMs(pd), benchMiB(vm.TotalAlloc))
		syncT, firstT, connT = append(syncT, s.total), append(firstT, s.firstVM), append(connT, s.connected)
		syncAlloc, syncPeak, syncHWM = append(syncAlloc, s.mem.TotalAlloc), append(syncPeak, s.mem.PeakHeap), append(syncHWM, s.mem.HWM)
		syncMallocs, syncInuse = append(syncMallocs, s.mem.Mallocs), append(syncInuse, s.mem.HeapInuse)
		retained = append(retained, uint64(max(0, s.retained)))
		rssStart = append(rssStart, s.mem.RSSAtStart)
		if !s.mem.hwmReset {
			tb.Logf("round %d: /proc/self/clear_refs could not reset VmHWM: it is the peak since the process started", r+1)
		}
		plainT, retrT, serverT = append(plainT, total), append(retrT, retrieve), append(serverT, server)
		plainAlloc, plainPeak, plainHWM, plainMallocs = append(plainAlloc, pm.TotalAlloc), append(plainPeak, pm.PeakHeap), append(plainHWM, pm.HWM), append(plainMallocs, pm.Mallocs)
		provT, provAlloc, provPeak = append(provT, pd), append(provAlloc, vm.TotalAlloc), append(provPeak, vm.PeakHeap)
	}
	ms, mp := benchMedian(syncT), benchMedian(plainT)
	ratio := float64(ms) / float64(mp)
	verdict := "met"
	if ratio > benchSyncTarget {
		verdict = "MISSED"
	}
	tb.Logf("first sync of %d vms, medians of %d alternating rounds:", n, rounds)
	tb.Logf("| | time | allocated | objects allocated | peak heap | heap in use at end | VmHWM |")
	tb.Logf("|---|---|---|---|---|---|---|")
	tb.Logf("| Polyvisor first sync (Run -> connected, %d VMs in the index) | %s | %.0f MiB | %.2f M | %.0f MiB | %.0f MiB | %.0f MiB |",
		n, benchMs(ms), benchMiB(benchMedianU(syncAlloc)), float64(benchMedianU(syncMallocs))/1e6, benchMiB(benchMedianU(syncPeak)), benchMiB(benchMedianU(syncInuse)), benchMiB(benchMedianU(syncHWM)))
	tb.Logf("| plain govmomi: login + container view + Retrieve | %s | %.0f MiB | %.2f M | %.0f MiB | | %.0f MiB |",
		benchMs(mp), benchMiB(benchMedianU(plainAlloc)), float64(benchMedianU(plainMallocs))/1e6, benchMiB(benchMedianU(plainPeak)), benchMiB(benchMedianU(plainHWM)))
	tb.Logf("| of which Retrieve alone | %s | | | | | |", benchMs(benchMedian(retrT)))
	tb.Logf("| of which vcsim answering the Retrieve (to its first byte) | %s | | | | | |", benchMs(benchMedian(serverT)))
	tb.Logf("| vsphere provider Connect + Inventory (no store) | %s | %.0f MiB | | %.0f MiB | | |",
		benchMs(benchMedian(provT)), benchMiB(benchMedianU(provAlloc)), benchMiB(benchMedianU(provPeak)))
	tb.Logf("VmRSS before a sync round (vcsim's %d VMs, Go runtime, the previous rounds' freed pages): %.0f MiB (median)", n, benchMiB(benchMedianU(rssStart)))
	tb.Logf("sync: first VM in the index at %s, connected at %s (medians); heap retained after the sync with the manager stopped: %.0f MiB",
		benchMs(benchMedian(firstT)), benchMs(benchMedian(connT)), benchMiB(benchMedianU(retained)))
	tb.Logf("load average after the rounds: %s", benchLoadAvg())
	tb.Logf("ratio sync / plain listing = %.2f (target <= %.1f: %s); sync / provider read = %.2f; warnings logged: %d",
		ratio, benchSyncTarget, verdict, float64(ms)/float64(benchMedian(provT)), benchWarnings.Load()-warn0)
	if b, ok := tb.(*testing.B); ok {
		b.ReportMetric(float64(ms)/1e6, "sync-ms")
		b.ReportMetric(float64(mp)/1e6, "plain-ms")
		b.ReportMetric(ratio, "ratio")
		b.ReportMetric(benchMiB(benchMedianU(syncAlloc)), "sync-alloc-MiB")
		b.ReportMetric(0, "ns/op")
	}
}

// benchLatencyRow is one way of seeing the changes.
type benchLatencyRow struct {
	what string
	lat  []time.Duration
}

// benchLatencies prints the latencies of one estate's changes as table
// rows, and reports Polyvisor's (the first row) as benchmark metrics.
func benchLatencies(tb testing.TB, estate string, rows []benchLatencyRow, calls []time.Duration) {
	tb.Helper()
	tb.Logf("| estate | from the change call's return to | N | p50 | p90 | p99 | max | returned before (<0) |")
	tb.Logf("|---|---|---|---|---|---|---|---|")
	for _, r := range append(rows, benchLatencyRow{"(the change call itself: start to return)", calls}) {
		neg := 0
		for _, d := range r.lat {
			if d < 0 {
				neg++
			}
		}
		tb.Logf("| %s | %s | %d | %s | %s | %s | %s | %d |", estate, r.what, len(r.lat),
			benchMs(benchPercentile(r.lat, 50)), benchMs(benchPercentile(r.lat, 90)), benchMs(benchPercentile(r.lat, 99)), benchMs(slices.Max(r.lat)), neg)
	}
	if b, ok := tb.(*testing.B); ok {
		st := rows[0].lat
		b.ReportMetric(float64(benchPercentile(st, 50))/1e6, "p50-ms")
		b.ReportMetric(float64(benchPercentile(st, 99))/1e6, "p99-ms")
		b.ReportMetric(float64(slices.Max(st))/1e6, "max-ms")
		b.ReportMetric(0, "ns/op")
	}
}

// benchPass makes n changes behind everyone's back, the i-th flipping
// the power state of VM ids[i%len(ids)], and times each from the change
// call's return to log showing it (log is keyed by key(id)).
func benchPass(tb testing.TB, n int, ids []string, state map[string]string, flip func(id, to string) (start, done time.Time),
	log *benchPowerLog, key func(id string) string) (lat, calls []time.Duration) {
	tb.Helper()
	for i := range n {
		id := ids[i%len(ids)]
		to := benchFlip(state[id])
		mark := log.mark()
		start, done := flip(id, to)
		state[id] = to
		seen, err := log.wait(mark, key(id), to, time.Minute)
		if err != nil {
			tb.Fatalf("change %d: %v", i+1, err)
		}
		lat, calls = append(lat, seen.Sub(done)), append(calls, done.Sub(start))
	}
	return lat, calls
}

func benchSame(id string) string { return id }

// benchProviderWatch runs a provider's Watch alone (no store, no
// manager) and logs the power state of every VM it reports, by native
// id. ready returns once the watch is live.
func benchProviderWatch(tb testing.TB, typ string, cfg provider.Config, ready func(*benchPowerLog, <-chan struct{})) (*benchPowerLog, func()) {
	tb.Helper()
	p, err := registry.New(typ, cfg, benchLogger(tb))
	benchMust(tb, err)
	ctx, cancel := context.WithCancel(context.Background())
	benchMust(tb, p.Connect(ctx))
	l := newBenchPowerLog()
	resync := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = p.Watch(ctx, func(c provider.Change) {
			now := time.Now()
			switch {
			case c.Resync:
				select {
				case resync <- struct{}{}:
				default:
				}
			case c.VM != nil:
				l.add(c.VM.ID, c.VM.PowerState, now)
			case c.DeletedVM != "":
				l.add(c.DeletedVM, "deleted", now)
			}
		})
	}()
	ready(l, resync)
	return l, func() {
		cancel()
		<-done
		_ = p.Close()
	}
}

// benchRawVSphereWatch follows the VMs' properties the provider watches
// with a property collector of its own session, as a plain govmomi
// client would, and logs each power state change by managed object id.
func benchRawVSphereWatch(tb testing.TB, sim *benchSim) (*benchPowerLog, func()) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := newBenchPowerLog()
	c, err := govmomi.NewClient(ctx, sim.loginURL(), true)
	benchMust(tb, err)
	v, err := view.NewManager(c.Client).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	benchMust(tb, err)
	res, err := methods.CreatePropertyCollector(ctx, c.Client, &types.CreatePropertyCollector{This: c.ServiceContent.PropertyCollector})
	benchMust(tb, err)
	pc := res.Returnval
	_, err = methods.CreateFilter(ctx, c.Client, &types.CreateFilter{
		This: pc,
		Spec: types.PropertyFilterSpec{
			ObjectSet: []types.ObjectSpec{{Obj: v.Reference(), Skip: types.NewBool(true),
				SelectSet: []types.BaseSelectionSpec{&types.TraversalSpec{Type: "ContainerView", Path: "view"}}}},
			PropSet: []types.PropertySpec{{Type: "VirtualMachine", PathSet: benchVMProps}},
		},
	})
	benchMust(tb, err)
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		req := types.WaitForUpdatesEx{This: pc, Options: &types.WaitOptions{MaxWaitSeconds: types.NewInt32(3)}}
		first := true
		for ctx.Err() == nil {
			res, err := methods.WaitForUpdatesEx(ctx, c.Client, &req)
			if err != nil {
				return
			}
			if res.Returnval == nil {
				continue
			}
			now := time.Now()
			req.Version = res.Returnval.Version
			for _, fs := range res.Returnval.FilterSet {
				for _, u := range fs.ObjectSet {
					for _, ch := range u.ChangeSet {
						if ch.Name == "runtime.powerState" {
							l.add(u.Obj.Value, benchVSpherePower(ch.Val), now)
						}
					}
				}
			}
			if first && (res.Returnval.Truncated == nil || !*res.Returnval.Truncated) {
				first = false
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(time.Minute):
		tb.Fatal("the plain govmomi watcher got no first answer")
	}
	return l, func() {
		cancel()
		<-done
		_ = c.Logout(context.Background())
	}
}

func benchVSpherePower(v any) string {
	switch fmt.Sprint(v) {
	case string(types.VirtualMachinePowerStatePoweredOn):
		return api.PowerRunning
	case string(types.VirtualMachinePowerStatePoweredOff):
		return api.PowerStopped
	case string(types.VirtualMachinePowerStateSuspended):
		return api.PowerPaused
	}
	return fmt.Sprint(v)
}

// benchVSphereEstate starts a Manager on sim (a fresh store) and returns
// once the first sync is done and its watch is live (the watch's first
// answer asks for a second full sync; the provider's lastSync then
// changes a second time). The counter counts full syncs.
func benchVSphereEstate(tb testing.TB, ctx context.Context, sim *benchSim, n int) (*benchEnv, *benchPowerLog, *atomic.Int64) {
	tb.Helper()
	env := benchOpenEnv(tb, tb.TempDir())
	env.addProvider(tb, "vc", sim.spec(), benchSimPass)
	w := benchFollowSync(ctx, env, "vc", n)
	plog := benchFollowPower(ctx, env, "vc")
	syncs := make(chan struct{}, 16)
	count := new(atomic.Int64)
	provCh := env.providers.Subscribe(ctx)
	go func() {
		var last time.Time
		for c := range provCh {
			if c.Type == store.Put && c.Obj.Status.State == api.ProviderConnected && !c.Obj.Status.LastSync.Equal(last) {
				last = c.Obj.Status.LastSync
				count.Add(1)
				select {
				case syncs <- struct{}{}:
				default:
				}
			}
		}
	}()
	env.start(tb)
	w.wait(tb, 5*time.Minute)
	for i := range 2 {
		select {
		case <-syncs:
		case <-time.After(5 * time.Minute):
			tb.Fatalf("full sync %d of the provider not seen", i+1)
		}
	}
	return env, plog, count
}

// benchVSphereToggle powers a VM off or on through govmomi and waits for
// the task; it returns when the call started and when the task was done.
func benchVSphereToggle(tb testing.TB, ctx context.Context, sim *benchSim, ref types.ManagedObjectReference, to string) (time.Time, time.Time) {
	tb.Helper()
	vm := object.NewVirtualMachine(sim.c, ref)
	start := time.Now()
	var task *object.Task
	var err error
	if to == api.PowerStopped {
		task, err = vm.PowerOff(ctx)
	} else {
		task, err = vm.PowerOn(ctx)
	}
	if err == nil {
		err = task.Wait(ctx)
	}
	done := time.Now()
	if err != nil {
		tb.Fatalf("power %s %s: %v", ref.Value, to, err)
	}
	return start, done
}

func benchFlip(s string) string {
	if s == api.PowerRunning {
		return api.PowerStopped
	}
	return api.PowerRunning
}

// benchLatencyVSphere makes N power changes through govmomi, behind
// Polyvisor's back, and times each from the task's completion to the
// store's index showing it; then the same N changes are seen by the
// vsphere provider's Watch alone and by a plain govmomi watcher, each
// pass alone against vcsim. size is the vcsim's: 0 for the default VPX
// model (4 VMs), else a grown estate of that many VMs; the changes go
// round the first 8 VMs by name, even ones running and odd ones stopped
// first, so that successive changes alternate between off and on.
func benchLatencyVSphere(tb testing.TB, size, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sim *benchSim
	if size == 0 {
		sim = benchNewSim(tb, simulator.VPX())
	} else {
		sim = benchGrowSim(tb, size)
	}
	all := sim.vms(tb, "name", "runtime.powerState")
	slices.SortFunc(all, func(a, b mo.VirtualMachine) int { return strings.Compare(a.Name, b.Name) })
	state := map[string]string{}
	refs := map[string]types.ManagedObjectReference{}
	var ids []string
	for i, vm := range all[:min(8, len(all))] {
		id := vm.Self.Value
		ids, refs[id] = append(ids, id), vm.Self
		if want := []string{api.PowerRunning, api.PowerStopped}[i%2]; benchVSpherePower(vm.Runtime.PowerState) != want {
			benchVSphereToggle(tb, ctx, sim, vm.Self, want)
		}
		state[id] = []string{api.PowerRunning, api.PowerStopped}[i%2]
	}
	flip := func(id, to string) (time.Time, time.Time) { return benchVSphereToggle(tb, ctx, sim, refs[id], to) }

	// Polyvisor: manager, provider, store.
	env, plog, syncs := benchVSphereEstate(tb, ctx, sim, len(all))
	names := map[string]string{}
	for id, vm := range env.providerVMs("vc") {
		names[id] = vm.Name
	}
	syncs0 := syncs.Load()
	st, calls := benchPass(tb, n, ids, state, flip, plog, func(id string) string { return names[id] })
	resyncs := syncs.Load() - syncs0
	env.close()

	// The vsphere provider's Watch alone.
	pw, stopPW := benchProviderWatch(tb, "vsphere", provider.Config{Name: "vc", URL: sim.url, Username: benchSimUser, Password: benchSimPass, CACert: sim.ca},
		func(_ *benchPowerLog, resync <-chan struct{}) {
			select {
			case <-resync: // sent once the watch's first answer is in
			case <-time.After(5 * time.Minute):
				tb.Fatal("the vsphere watch did not start")
			}
		})
	pws, _ := benchPass(tb, n, ids, state, flip, pw, benchSame)
	stopPW()

	// A plain govmomi watcher of the same VM properties.
	raw, stopRaw := benchRawVSphereWatch(tb, sim)
	rws, _ := benchPass(tb, n, ids, state, flip, raw, benchSame)
	stopRaw()

	tb.Logf("vsphere: %d power changes (off/on alternately) over %d of the %d vcsim VMs, in each of 3 passes; full syncs during Polyvisor's pass: %d",
		n, len(ids), len(all), resyncs)
	benchLatencies(tb, fmt.Sprintf("vsphere (vcsim, %d VMs)", len(all)), []benchLatencyRow{
		{"the store's index (Polyvisor: provider watch + estate + etcd)", st},
		{"the vsphere provider's Watch callback (no store)", pws},
		{"a plain govmomi WaitForUpdatesEx of the same VM properties", rws},
	}, calls)
}

// benchUUID formats a libvirt UUID as libvirt prints it.
func benchUUID(u golibvirt.UUID) string {
	h := hex.EncodeToString(u[:])
	return strings.Join([]string{h[:8], h[8:12], h[12:16], h[16:20], h[20:]}, "-")
}

const benchLibvirtSocket = "/var/run/libvirt/libvirt-sock"

// benchLatencyLibvirt does the same with domains of libvirt's test
// driver (test:///default) inside a running libvirtd: domains started
// (virDomainCreate) and destroyed through go-libvirt directly.
func benchLatencyLibvirt(tb testing.TB, n int) {
	sock, err := net.DialTimeout("unix", benchLibvirtSocket, time.Second)
	if err != nil {
		peer.Missing(tb, "libvirt part skipped: no libvirtd answers on %s (%v)", benchLibvirtSocket, err)
	}
	const uri = "test:///default"
	raw := golibvirt.NewWithDialer(dialers.NewAlreadyConnected(sock))
	if err := raw.ConnectToURI(golibvirt.ConnectURI(uri)); err != nil {
		sock.Close()
		peer.Missing(tb, "libvirt part skipped: libvirtd on %s cannot open %s: %v", benchLibvirtSocket, uri, err)
	}
	defer raw.Disconnect()

	var rb [3]byte
	_, _ = rand.Read(rb[:])
	prefix := "pvbench-" + hex.EncodeToString(rb[:])
	const k = 4
	doms := map[string]golibvirt.Domain{}
	var ids []string
	defer func() {
		for _, d := range doms {
			_ = raw.DomainDestroy(d)
			_ = raw.DomainUndefine(d)
		}
	}()
	xml := func(name string) string {
		return fmt.Sprintf(`<domain type='test'><name>%s</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>`+
			`<os><type>hvm</type></os></domain>`, name)
	}
	state := map[string]string{}
	for i := range k {
		d, err := raw.DomainDefineXML(xml(fmt.Sprintf("%s-%d", prefix, i)))
		benchMust(tb, err)
		id := benchUUID(d.UUID)
		doms[id], ids, state[id] = d, append(ids, id), api.PowerStopped
		if i%2 == 0 { // even domains running, odd ones stopped
			benchMust(tb, raw.DomainCreate(d))
			state[id] = api.PowerRunning
		}
	}
	flip := func(id, to string) (time.Time, time.Time) {
		start := time.Now()
		var err error
		if to == api.PowerRunning {
			err = raw.DomainCreate(doms[id])
		} else {
			err = raw.DomainDestroy(doms[id])
		}
		done := time.Now()
		benchMust(tb, err)
		return start, done
	}
	// live waits until a probe domain defined now is reported, by seen.
	live := func(seen func(id string) bool) {
		for try := range 50 {
			d, err := raw.DomainDefineXML(xml(fmt.Sprintf("%s-probe%d", prefix, try)))
			benchMust(tb, err)
			ok := false
			for w := 0; w < 50 && !ok; w++ {
				time.Sleep(5 * time.Millisecond)
				ok = seen(benchUUID(d.UUID))
			}
			benchMust(tb, raw.DomainUndefine(d))
			if ok {
				return
			}
		}
		tb.Fatal("the libvirt watch reports no events")
	}

	// Polyvisor: manager, provider, store.
	env := benchOpenEnv(tb, tb.TempDir())
	env.addProvider(tb, "kvm", api.ProviderSpec{Type: "libvirt", URL: uri}, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	plog := benchFollowPower(ctx, env, "kvm")
	env.start(tb)
	names := map[string]string{}
	deadline := time.Now().Add(time.Minute)
	for len(names) < k {
		if time.Now().After(deadline) {
			tb.Fatalf("the test domains are not mirrored within a minute (%d of %d)", len(names), k)
		}
		time.Sleep(10 * time.Millisecond)
		if p, ok := env.providers.Get("kvm"); !ok || p.Status.State != api.ProviderConnected {
			continue
		}
		mirrored := env.providerVMs("kvm")
		for _, id := range ids {
			if vm, ok := mirrored[id]; ok && vm.Status.PowerState == state[id] {
				names[id] = vm.Name
			}
		}
	}
	// The manager's watch registers on its own goroutine after the sync.
	live(func(id string) bool { _, ok := env.providerVMs("kvm")[id]; return ok })
	st, calls := benchPass(tb, n, ids, state, flip, plog, func(id string) string { return names[id] })
	env.close()

	// The libvirt provider's Watch alone.
	pw, stopPW := benchProviderWatch(tb, "libvirt", provider.Config{Name: "kvm", URL: uri}, func(l *benchPowerLog, _ <-chan struct{}) {
		live(func(id string) bool { _, err := l.wait(0, id, api.PowerStopped, 0); return err == nil })
	})
	pws, _ := benchPass(tb, n, ids, state, flip, pw, benchSame)
	stopPW()

	// Plain lifecycle events on the test's own go-libvirt connection.
	rawLog := newBenchPowerLog()
	ectx, ecancel := context.WithCancel(context.Background())
	events, err := raw.LifecycleEvents(ectx)
	benchMust(tb, err)
	go func() {
		for ev := range events {
			now := time.Now()
			switch golibvirt.DomainEventType(ev.Event) {
			case golibvirt.DomainEventStarted, golibvirt.DomainEventResumed:
				rawLog.add(benchUUID(ev.Dom.UUID), api.PowerRunning, now)
			case golibvirt.DomainEventStopped:
				rawLog.add(benchUUID(ev.Dom.UUID), api.PowerStopped, now)
			case golibvirt.DomainEventDefined:
				rawLog.add(benchUUID(ev.Dom.UUID), api.PowerStopped, now)
			}
		}
	}()
	live(func(id string) bool { _, err := rawLog.wait(0, id, api.PowerStopped, 0); return err == nil })
	rws, _ := benchPass(tb, n, ids, state, flip, rawLog, benchSame)
	ecancel()

	tb.Logf("libvirt: %d changes (create/destroy alternately) over %d test-driver domains of %s in libvirtd, in each of 3 passes", n, k, uri)
	benchLatencies(tb, "libvirt (test:///default)", []benchLatencyRow{
		{"the store's index (Polyvisor: provider watch + estate + etcd)", st},
		{"the libvirt provider's Watch callback (no store)", pws},
		{"a plain go-libvirt lifecycle event on the caller's connection", rws},
	}, calls)
}

// TestEstateSmoke mirrors a vcsim of 200 VMs through the real path and
// follows 5 changes made behind the Manager's back. It checks what the
// store holds, not how fast it got there.
func TestEstateSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd and a vcsim of 200 VMs")
	}
	const n, changes = 200, 5
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sim := benchGrowSim(t, n)
	vms := sim.vms(t, "name", "runtime.powerState", "runtime.host")
	slices.SortFunc(vms, func(a, b mo.VirtualMachine) int { return strings.Compare(a.Name, b.Name) })
	env, plog, _ := benchVSphereEstate(t, ctx, sim, n)
	defer env.close()

	var hosts []mo.HostSystem
	{
		v, err := view.NewManager(sim.c).CreateContainerView(ctx, sim.c.ServiceContent.RootFolder, []string{"HostSystem"}, true)
		benchMust(t, err)
		benchMust(t, v.Retrieve(ctx, []string{"HostSystem"}, []string{"name"}, &hosts))
		_ = v.Destroy(ctx)
	}
	got := env.providerVMs("vc")
	if len(got) != n {
		t.Fatalf("the store holds %d vms of the provider, want %d", len(got), n)
	}
	hostNames := map[string]string{}
	for _, h := range func() []*api.Host { l, _, _ := env.hosts.List(store.ListOptions[api.Host]{}); return l }() {
		if h.Provider != nil && h.Provider.Name == "vc" {
			hostNames[h.Provider.ID] = h.Name
		}
	}
	if len(hostNames) != len(hosts) {
		t.Errorf("the store holds %d hosts of the provider, vcsim has %d", len(hostNames), len(hosts))
	}
	state := map[string]string{}
	for _, vm := range vms {
		id := vm.Self.Value
		state[id] = benchVSpherePower(vm.Runtime.PowerState)
		sv, ok := got[id]
		if !ok {
			t.Fatalf("vcsim vm %s (%s) is not in the store", vm.Name, id)
		}
		if sv.Status.PowerState != state[id] || sv.Spec.PowerState != state[id] {
			t.Errorf("vm %s: status %s, spec %s, vcsim %s", sv.Name, sv.Status.PowerState, sv.Spec.PowerState, state[id])
		}
		if sv.Status.ObservedGeneration != sv.Generation {
			t.Errorf("vm %s: observed generation %d of %d", sv.Name, sv.Status.ObservedGeneration, sv.Generation)
		}
		if vm.Runtime.Host != nil && sv.Spec.Host != hostNames[vm.Runtime.Host.Value] {
			t.Errorf("vm %s: host %q, want %q", sv.Name, sv.Spec.Host, hostNames[vm.Runtime.Host.Value])
		}
	}
	p, _ := env.providers.Get("vc")
	if p.Status.State != api.ProviderConnected || p.Status.Inventory.VMs != n || p.Status.Stale {
		t.Errorf("provider status %+v", p.Status)
	}

	for i := range changes {
		vm := vms[i*(n/changes)]
		id := vm.Self.Value
		to := benchFlip(state[id])
		mark := plog.mark()
		benchVSphereToggle(t, ctx, sim, vm.Self, to)
		state[id] = to
		if _, err := plog.wait(mark, got[id].Key(), to, time.Minute); err != nil {
			t.Fatalf("change %d: %v", i+1, err)
		}
		sv, _ := env.vms.Get(got[id].Key())
		if sv.Spec.PowerState != to || sv.Status.ObservedGeneration != sv.Generation {
			t.Errorf("vm %s after the change: spec %s, observed generation %d of %d", sv.Name, sv.Spec.PowerState, sv.Status.ObservedGeneration, sv.Generation)
		}
	}
	if env.vms.Len() != n {
		t.Errorf("the store holds %d vms after the changes, want %d", env.vms.Len(), n)
	}
}
