package estate_test

// Helpers of bench_test.go: an in-process vcsim grown to thousands of VMs,
// a server-like store and estate.Manager around one provider, recorders of
// the changes the store's index shows, and the process's memory figures.
// Every name starts with "bench" so that other test files of the package
// cannot clash with them.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/estate"
	"github.com/polyvisor/polyvisor/internal/provider/registry"
	"github.com/polyvisor/polyvisor/internal/secrets"
	"github.com/polyvisor/polyvisor/internal/store"
)

// vcsim accepts only these credentials.
const (
	benchSimUser = "administrator@vsphere.local"
	benchSimPass = "Bench-pa55!"
)

// benchVMProps are the VirtualMachine properties the vsphere provider's
// Inventory reads (internal/provider/vsphere/props.go, vmProps); the plain
// govmomi listing reads the same ones.
var benchVMProps = []string{
	"name", "parent", "parentVApp",
	"runtime.powerState", "runtime.host",
	"config.hardware.numCPU", "config.hardware.memoryMB", "config.guestFullName",
	"config.template", "config.hardware.device",
	"guest.ipAddress", "guest.net",
}

// benchSim is an in-process vcsim with a real SOAP endpoint over TLS, and
// a govmomi client of its own for changes made behind Polyvisor's back.
type benchSim struct {
	model *simulator.Model
	url   string // https://127.0.0.1:port/sdk, no credentials
	ca    []byte // PEM of the endpoint's certificate
	c     *vim25.Client
}

func benchNewSim(tb testing.TB, m *simulator.Model) *benchSim {
	tb.Helper()
	if err := m.Create(); err != nil {
		tb.Fatalf("create vcsim model: %v", err)
	}
	m.Service.TLS = new(tls.Config)
	m.Service.Listen = &url.URL{User: url.UserPassword(benchSimUser, benchSimPass)}
	s := m.Service.NewServer()
	tb.Cleanup(func() {
		// Close waits for every request in flight; a vcsim deadlocked on
		// its own locks (govmomi v0.56.0's simulator can deadlock a
		// WaitForUpdatesEx against a clone adding to a container view)
		// would hold the test binary until its timeout.
		closed := make(chan struct{})
		go func() {
			s.Close()
			m.Remove()
			close(closed)
		}()
		select {
		case <-closed:
		case <-time.After(time.Minute):
			tb.Errorf("vcsim did not stop within a minute: requests in it are stuck (see the goroutines of govmomi's simulator)")
		}
	})
	u := *s.URL
	u.User = nil
	gc, err := govmomi.NewClient(context.Background(), s.URL, true)
	if err != nil {
		tb.Fatalf("govmomi client: %v", err)
	}
	tb.Cleanup(func() { _ = gc.Logout(context.Background()) })
	return &benchSim{
		model: m,
		url:   u.String(),
		ca:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}),
		c:     gc.Client,
	}
}

// loginURL is the endpoint with the credentials, for a plain govmomi login.
func (e *benchSim) loginURL() *url.URL {
	u, _ := url.Parse(e.url)
	u.User = url.UserPassword(benchSimUser, benchSimPass)
	return u
}

// benchBigModel is a vCenter of two datacenters, each with two clusters of
// four hosts and a standalone host: 18 hosts, 12 VMs to start from.
func benchBigModel() *simulator.Model {
	m := simulator.VPX()
	m.Datacenter = 2
	m.Cluster = 2
	m.ClusterHost = 4
	m.Host = 1
	m.Portgroup = 2
	m.Machine = 2
	return m
}

// benchVMs lists every VM with properties ps, through a container view.
func (e *benchSim) vms(tb testing.TB, ps ...string) []mo.VirtualMachine {
	tb.Helper()
	ctx := context.Background()
	v, err := view.NewManager(e.c).CreateContainerView(ctx, e.c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	benchMust(tb, err)
	defer func() { _ = v.Destroy(ctx) }()
	var out []mo.VirtualMachine
	benchMust(tb, v.Retrieve(ctx, []string{"VirtualMachine"}, ps, &out))
	return out
}

// benchGrowSim grows a vcsim estate to n VMs. vcsim makes a model's VMs
// one by one, each task taking tens of milliseconds, so the VMs are cloned
// from the model's by many workers at once; vcsim serialises clones into
// one folder, so each worker clones into a folder of its own, next to the
// VMs it clones (same datacenter, pool and host; the clones are stopped).
func benchGrowSim(tb testing.TB, n int) *benchSim {
	tb.Helper()
	start := time.Now()
	e := benchNewSim(tb, benchBigModel())
	ctx := context.Background()
	workers := 32
	if benchRace {
		workers = 1
	}
	e.c.DefaultTransport().MaxIdleConnsPerHost = workers

	byParent := map[types.ManagedObjectReference][]mo.VirtualMachine{}
	var parents []types.ManagedObjectReference
	for _, vm := range e.vms(tb, "name", "parent") {
		if byParent[*vm.Parent] == nil {
			parents = append(parents, *vm.Parent)
		}
		byParent[*vm.Parent] = append(byParent[*vm.Parent], vm)
	}
	todo := n - e.model.Count().Machine
	if todo < 0 {
		tb.Fatalf("the model has %d vms already, more than %d", e.model.Count().Machine, n)
	}
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		count := todo / workers
		if w < todo%workers {
			count++
		}
		if count == 0 {
			continue
		}
		parent := parents[w%len(parents)]
		sources := byParent[parent]
		folder, err := object.NewFolder(e.c, parent).CreateFolder(ctx, fmt.Sprintf("pvbench-%d", w))
		benchMust(tb, err)
		wg.Go(func() {
			for i := range count {
				src := sources[i%len(sources)]
				name := fmt.Sprintf("%s_W%d_%d", src.Name, w, i)
				task, err := object.NewVirtualMachine(e.c, src.Self).Clone(ctx, folder, name, types.VirtualMachineCloneSpec{})
				if err == nil {
					err = task.Wait(ctx)
				}
				if err != nil {
					errc <- fmt.Errorf("clone %s: %w", name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errc:
		tb.Fatal(err)
	default:
	}
	if got := e.model.Count().Machine; got != n {
		tb.Fatalf("vcsim has %d vms, want %d", got, n)
	}
	tb.Logf("vcsim estate of %d vms ready in %v", n, time.Since(start).Round(time.Millisecond))
	return e
}

// benchEnv is what internal/server.New sets up around an estate.Manager:
// an embedded etcd store with the collections the manager uses, the
// secrets box, and the manager, with one provider stored.
type benchEnv struct {
	st        *store.Store
	vms       *store.Collection[api.VM]
	hosts     *store.Collection[api.Host]
	providers *store.Collection[api.Provider]
	creds     *store.Collection[estate.Credential]
	box       *secrets.Box
	mgr       *estate.Manager

	cancel context.CancelFunc
	done   chan struct{}
}

// benchOpenEnv opens an embedded store in dir and registers the
// collections as the server does.
func benchOpenEnv(tb testing.TB, dir string) *benchEnv {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: dir, Logger: benchLogger(tb)})
	benchMust(tb, err)
	e := &benchEnv{st: st}
	e.vms = store.NewCollection(st, "vms", func(v *api.VM, rev int64) { v.Version = rev })
	e.hosts = store.NewCollection(st, "hosts", func(h *api.Host, rev int64) { h.Version = rev })
	e.providers = store.NewCollection(st, "providers", func(p *api.Provider, rev int64) { p.Version = rev })
	e.creds = store.NewCollection(st, "credentials", func(c *estate.Credential, rev int64) { c.Version = rev })
	if err := st.Start(ctx); err != nil {
		st.Close()
		tb.Fatalf("start store: %v", err)
	}
	if e.box, err = secrets.Load(filepath.Join(dir, "secret.key")); err != nil {
		st.Close()
		tb.Fatal(err)
	}
	tb.Cleanup(e.close)
	return e
}

// addProvider stores a provider and its sealed password in one
// transaction, as POST /v1/providers does once it has verified them.
func (e *benchEnv) addProvider(tb testing.TB, name string, spec api.ProviderSpec, password string) {
	tb.Helper()
	now := time.Now().UTC()
	p := &api.Provider{
		Meta:   api.Meta{Name: name, UID: "bench-" + name, Generation: 1, CreatedAt: now, UpdatedAt: now},
		Spec:   spec,
		Status: api.ProviderStatus{State: api.ProviderConnecting},
	}
	ops := []store.Op{e.providers.OpCreate(name, p)}
	if password != "" {
		sealed, err := e.box.Seal(password, estate.SecretContext(name))
		benchMust(tb, err)
		ops = append(ops, e.creds.OpCreate(name, &estate.Credential{Name: name, Sealed: sealed}))
	}
	_, err := e.st.Txn(context.Background(), ops...)
	benchMust(tb, err)
}

// vsphereSpec is the provider spec of a vcsim.
func (e *benchSim) spec() api.ProviderSpec {
	return api.ProviderSpec{Type: "vsphere", URL: e.url, Username: benchSimUser, CACert: string(e.ca)}
}

// start makes the manager, with the registry's factory, and runs it.
func (e *benchEnv) start(tb testing.TB) {
	tb.Helper()
	e.mgr = estate.New(estate.Config{
		Store: e.st, Providers: e.providers, Credentials: e.creds, Hosts: e.hosts, VMs: e.vms,
		Secrets: e.box, Factory: registry.New, Logger: benchLogger(tb),
	})
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel, e.done = cancel, make(chan struct{})
	go func() {
		defer close(e.done)
		e.mgr.Run(ctx)
	}()
}

// stop stops the manager and waits until Run has returned.
func (e *benchEnv) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	<-e.done
	e.cancel = nil
}

func (e *benchEnv) close() {
	e.stop()
	e.st.Close()
}

// providerVMs returns the store's VMs of provider name, by native id.
func (e *benchEnv) providerVMs(name string) map[string]*api.VM {
	items, _, _ := e.vms.List(store.ListOptions[api.VM]{})
	out := map[string]*api.VM{}
	for _, vm := range items {
		if vm.Spec.Provider != nil && vm.Spec.Provider.Name == name {
			out[vm.Spec.Provider.ID] = vm
		}
	}
	return out
}

// benchSyncWatch follows the store while a first sync runs: when the
// first VM appeared, when n VMs were there, when the provider said
// connected.
type benchSyncWatch struct {
	mu                        sync.Mutex
	firstVM, allVMs, connectd time.Time
	done                      chan struct{}
	closeOnce                 sync.Once
}

// benchFollowSync subscribes to the vms and providers collections (call
// it before the manager starts) and notes the moments of a first sync of
// provider name with n VMs.
func benchFollowSync(ctx context.Context, e *benchEnv, name string, n int) *benchSyncWatch {
	w := &benchSyncWatch{done: make(chan struct{})}
	vmCh := e.vms.Subscribe(ctx)
	provCh := e.providers.Subscribe(ctx)
	check := func() {
		if !w.allVMs.IsZero() && !w.connectd.IsZero() {
			w.closeOnce.Do(func() { close(w.done) })
		}
	}
	go func() {
		seen := map[string]bool{}
		for c := range vmCh {
			if c.Type != store.Put || seen[c.Name] || c.Obj.Spec.Provider == nil || c.Obj.Spec.Provider.Name != name {
				continue
			}
			now := time.Now()
			seen[c.Name] = true
			w.mu.Lock()
			if len(seen) == 1 {
				w.firstVM = now
			}
			if len(seen) == n {
				w.allVMs = now
			}
			check()
			w.mu.Unlock()
		}
	}()
	go func() {
		for c := range provCh {
			if c.Type == store.Put && c.Name == name && c.Obj.Status.State == api.ProviderConnected {
				now := time.Now()
				w.mu.Lock()
				if w.connectd.IsZero() {
					w.connectd = now
				}
				check()
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// wait returns when the sync is complete, failing after timeout.
func (w *benchSyncWatch) wait(tb testing.TB, timeout time.Duration) (firstVM, allVMs, connected time.Time) {
	tb.Helper()
	select {
	case <-w.done:
	case <-time.After(timeout):
		w.mu.Lock()
		defer w.mu.Unlock()
		tb.Fatalf("first sync not complete after %v (first vm at %v, all at %v, connected at %v)", timeout, w.firstVM, w.allVMs, w.connectd)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.firstVM, w.allVMs, w.connectd
}

// benchPowerLog records, for one provider, each change of a VM's observed
// power state as the store's index shows it, with the moment the
// subscription delivered it.
type benchPowerLog struct {
	mu     sync.Mutex
	events []benchPowerEvent
	more   chan struct{}
}

type benchPowerEvent struct {
	key, state string // VM name (store) or native id (raw watchers)
	at         time.Time
}

func newBenchPowerLog() *benchPowerLog {
	return &benchPowerLog{more: make(chan struct{}, 1)}
}

func (l *benchPowerLog) add(key, state string, at time.Time) {
	l.mu.Lock()
	l.events = append(l.events, benchPowerEvent{key, state, at})
	l.mu.Unlock()
	select {
	case l.more <- struct{}{}:
	default:
	}
}

// mark is the index the next event will have.
func (l *benchPowerLog) mark() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events)
}

// wait returns when the first event from index since shows key in state.
func (l *benchPowerLog) wait(since int, key, state string, timeout time.Duration) (time.Time, error) {
	deadline := time.After(timeout)
	for {
		l.mu.Lock()
		for _, ev := range l.events[since:] {
			if ev.key == key && ev.state == state {
				l.mu.Unlock()
				return ev.at, nil
			}
		}
		since = len(l.events)
		l.mu.Unlock()
		select {
		case <-l.more:
		case <-deadline:
			return time.Time{}, fmt.Errorf("%s not seen %s within %v", key, state, timeout)
		}
	}
}

// benchFollowPower records the observed power state changes of provider
// name's VMs in the store's index.
func benchFollowPower(ctx context.Context, e *benchEnv, name string) *benchPowerLog {
	l := newBenchPowerLog()
	ch := e.vms.Subscribe(ctx)
	go func() {
		for c := range ch {
			if c.Type != store.Put || c.Obj.Spec.Provider == nil || c.Obj.Spec.Provider.Name != name {
				continue
			}
			if c.Prev == nil || c.Prev.Status.PowerState != c.Obj.Status.PowerState {
				l.add(c.Name, c.Obj.Status.PowerState, time.Now())
			}
		}
	}()
	return l
}

// benchLogger passes on warnings and errors (to stderr, the test may be
// over when etcd logs its shutdown) and counts them.
func benchLogger(tb testing.TB) *slog.Logger {
	var w io.Writer = io.Discard
	if testing.Verbose() {
		w = os.Stderr
	}
	return slog.New(&benchCountHandler{Handler: slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})})
}

// benchWarnings counts the warnings and errors logged by every benchLogger.
var benchWarnings atomic.Int64

type benchCountHandler struct{ slog.Handler }

func (h *benchCountHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		benchWarnings.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func (h *benchCountHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &benchCountHandler{h.Handler.WithAttrs(as)}
}

func (h *benchCountHandler) WithGroup(name string) slog.Handler {
	return &benchCountHandler{h.Handler.WithGroup(name)}
}

// benchMem measures what a phase of the test costs in memory: bytes and
// objects allocated, the heap in use at its end, the highest heap
// (runtime/metrics, sampled every 2 ms) and the highest resident set of
// the process (VmHWM, reset before the phase through /proc/self/clear_refs).
type benchMem struct {
	before      runtime.MemStats
	stop        chan struct{}
	sampled     chan uint64
	hwmReset    bool
	TotalAlloc  uint64 // bytes allocated during the phase
	Mallocs     uint64 // objects allocated during the phase
	HeapInuse   uint64 // heap in use at the end (spans with objects, garbage included)
	HeapDelta   int64  // HeapInuse at the end minus at the start
	PeakHeap    uint64 // highest heap objects bytes sampled (live and unswept)
	HWM         uint64 // peak RSS of the process during the phase (or since start if the reset failed)
	RSSAtStart  uint64
	NumGCDuring uint32
}

func benchMemStart() *benchMem {
	m := &benchMem{stop: make(chan struct{}), sampled: make(chan uint64, 1)}
	runtime.GC()
	m.RSSAtStart = benchProcStatus("VmRSS")
	// Writing 5 to clear_refs resets the peak RSS to the current RSS.
	m.hwmReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	runtime.ReadMemStats(&m.before)
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-m.stop:
				m.sampled <- peak
				return
			case <-tick.C:
			}
		}
	}()
	return m
}

func (m *benchMem) end() *benchMem {
	close(m.stop)
	m.PeakHeap = <-m.sampled
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	m.TotalAlloc = after.TotalAlloc - m.before.TotalAlloc
	m.Mallocs = after.Mallocs - m.before.Mallocs
	m.HeapInuse = after.HeapInuse
	m.HeapDelta = int64(after.HeapInuse) - int64(m.before.HeapInuse)
	m.NumGCDuring = after.NumGC - m.before.NumGC
	m.HWM = benchProcStatus("VmHWM")
	return m
}

// benchProcStatus reads a "kB" field of /proc/self/status, in bytes.
func benchProcStatus(field string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || k != field {
			continue
		}
		n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		return n << 10
	}
	return 0
}

// benchLoadAvg is /proc/loadavg: other work on the machine skews the times.
func benchLoadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// benchHeapInuse is the heap in use after a GC.
func benchHeapInuse() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse)
}

func benchMiB(b uint64) float64 { return float64(b) / (1 << 20) }

func benchMedian(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func benchMedianU(d []uint64) uint64 {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// benchPercentile is the nearest-rank percentile p (0 < p <= 100) of d.
func benchPercentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	rank := int(float64(len(s))*p/100 + 0.999999999)
	return s[max(0, min(len(s), rank)-1)]
}

func benchMs(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 1, 64) + " ms"
}

func benchMust(tb testing.TB, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatal(err)
	}
}

// benchEnabled tells whether the long measurements run: under -bench
// they always do, as tests only with POLYVISOR_BENCH_ESTATE=1.
func benchEnabled(tb testing.TB) bool {
	if _, ok := tb.(*testing.B); ok {
		return true
	}
	return os.Getenv("POLYVISOR_BENCH_ESTATE") == "1"
}

// benchEnvInt reads a positive integer from the environment.
func benchEnvInt(tb testing.TB, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		tb.Fatalf("%s=%q: want a positive integer", name, s)
	}
	return n
}
