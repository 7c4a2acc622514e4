package v2vrun

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/v2v"
)

// fakeRecords holds records in memory.
type fakeRecords struct {
	mu   sync.Mutex
	recs map[string]*api.VMMigration
}

func (f *fakeRecords) List() []*api.VMMigration {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*api.VMMigration
	for _, m := range f.recs {
		c := *m
		out = append(out, &c)
	}
	return out
}

func (f *fakeRecords) Get(key string) (*api.VMMigration, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.recs[key]
	if !ok {
		return nil, false
	}
	c := *m
	return &c, true
}

func (f *fakeRecords) Update(_ context.Context, key, uid string, change func(*api.VMMigration)) (*api.VMMigration, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.recs[key]
	if !ok || m.UID != uid {
		return nil, errGone
	}
	c := *m
	c.Status.VMs = append([]api.VMMigrationVMStatus(nil), m.Status.VMs...)
	change(&c)
	f.recs[key] = &c
	out := c
	return &out, nil
}

func (f *fakeRecords) edit(key string, change func(*api.VMMigration)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f.recs[key])
}

// fakeTarget keeps images and VMs in memory; a VM runs once created. A
// create blocks while hold is set, until its context ends.
type fakeTarget struct {
	mu       sync.Mutex
	images   map[string]*api.Image
	vms      map[string]*api.VM
	deleted  []string
	creating int
	most     int
	hold     bool
	// slots bounds the imports at once, as a project's do (0: none).
	slots, importing, busyImports int
	// busyFirst: so many imports find the slots taken (by the
	// project's users) before any is let through.
	busyFirst int
}

func newFakeTarget() *fakeTarget {
	return &fakeTarget{images: map[string]*api.Image{}, vms: map[string]*api.VM{}}
}

func (t *fakeTarget) Image(_ context.Context, project, name string) (*api.Image, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.images[project+"/"+name], nil
}

func (t *fakeTarget) ImportImage(_ context.Context, project, name, path string, progress func(int64, int64)) (string, error) {
	t.mu.Lock()
	if t.slots > 0 && t.importing >= t.slots || t.busyImports < t.busyFirst {
		t.busyImports++
		t.mu.Unlock()
		return "", ErrImportsBusy
	}
	t.importing++
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.importing--
		t.mu.Unlock()
	}()
	time.Sleep(20 * time.Millisecond)
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	progress(fi.Size(), fi.Size())
	t.mu.Lock()
	defer t.mu.Unlock()
	uid := fmt.Sprintf("img-%d", len(t.images)+len(t.deleted))
	t.images[project+"/"+name] = &api.Image{Meta: api.Meta{Name: name, UID: uid}, State: api.ImageReady}
	return uid, nil
}

func (t *fakeTarget) DeleteImage(_ context.Context, project, name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.images[project+"/"+name]; ok {
		delete(t.images, project+"/"+name)
		t.deleted = append(t.deleted, "image/"+name)
	}
	return nil
}

func (t *fakeTarget) VM(_ context.Context, project, name string) (*api.VM, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.vms[project+"/"+name], nil
}

func (t *fakeTarget) CreateVM(ctx context.Context, project string, c api.VMCreate) error {
	t.mu.Lock()
	for _, d := range c.Disks {
		if t.images[project+"/"+d.Image] == nil {
			t.mu.Unlock()
			return fmt.Errorf("no image %s", d.Image)
		}
	}
	t.vms[project+"/"+c.Name] = &api.VM{Meta: api.Meta{Name: c.Name, Labels: c.Labels},
		Spec: api.VMSpec{Host: "h1", VCPUs: c.VCPUs, MemoryMiB: c.MemoryMiB}, Status: api.VMStatus{PowerState: api.PowerRunning}}
	t.creating++
	t.most = max(t.most, t.creating)
	hold := t.hold
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		t.creating--
		t.mu.Unlock()
	}()
	if hold {
		<-ctx.Done()
		return ctx.Err()
	}
	time.Sleep(20 * time.Millisecond)
	return nil
}

func (t *fakeTarget) busy() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.creating > 0
}

func (t *fakeTarget) DeleteVM(_ context.Context, project, name string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.vms[project+"/"+name]; ok {
		delete(t.vms, project+"/"+name)
		t.deleted = append(t.deleted, "vm/"+name)
	}
	return nil
}

// fakeSource is VMs whose disks are raw files, of a provider that
// records what is done to them.
type fakeSource struct {
	vms []SourceVM
	mu  *sync.Mutex
	did *[]string
}

func (s fakeSource) Read(context.Context) ([]SourceVM, error) { return s.vms, nil }
func (s fakeSource) Streams() v2v.Streams                     { return nil }
func (s fakeSource) AfterVM(context.Context, string, error)   {}
func (s fakeSource) ChangeTracking(context.Context, string) (bool, string) {
	return false, "fake"
}
func (s fakeSource) PowerOff(_ context.Context, id string) error { return s.log("poweroff " + id) }
func (s fakeSource) Delete(_ context.Context, id string) error   { return s.log("delete " + id) }
func (s fakeSource) Close()                                      {}
func (s fakeSource) log(what string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	*s.did = append(*s.did, what)
	return nil
}

type fakeOpener struct{ src fakeSource }

func (o fakeOpener) Open(context.Context, *api.VMMigration, string) (Source, error) {
	return o.src, nil
}

// harness is a controller over fakes, with n source VMs whose raw disks
// hold 1 MiB.
type harness struct {
	c      *Controller
	recs   *fakeRecords
	target *fakeTarget
	did    []string
	audit  []string
	amu    sync.Mutex
	dir    string
}

func newHarness(t *testing.T, n int) *harness {
	t.Helper()
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed")
	}
	h := &harness{recs: &fakeRecords{recs: map[string]*api.VMMigration{}}, target: newFakeTarget(), dir: t.TempDir()}
	src := fakeSource{mu: &sync.Mutex{}, did: &h.did}
	disks := t.TempDir()
	for i := range n {
		path := filepath.Join(disks, fmt.Sprintf("vm%d.raw", i))
		if err := os.WriteFile(path, make([]byte, 1<<20), 0o600); err != nil {
			t.Fatal(err)
		}
		src.vms = append(src.vms, SourceVM{ID: fmt.Sprintf("id-%d", i), Kind: kindLibvirt, HW: v2v.Hardware{
			Name: fmt.Sprintf("VM %d", i), VCPUs: 1, MemoryMiB: 128, Firmware: v2v.FirmwareBIOS,
			Disks: []v2v.Disk{{Name: "vda", Bus: v2v.BusVirtio, CapacityBytes: 1 << 20, Source: v2v.DiskSource{Kind: v2v.SourceFile, Path: path, Format: "raw"}}},
			NICs:  []v2v.NIC{{Network: "default", MAC: fmt.Sprintf("52:54:00:00:00:%02x", i+1), Model: "virtio"}},
		}})
	}
	h.c = New(Config{Dir: h.dir, Server: "s1", Sources: fakeOpener{src}, Target: h.target, ReportEvery: 20 * time.Millisecond,
		Audit: func(_ context.Context, action string, _ api.Ref, _, outcome, _ string) {
			h.amu.Lock()
			h.audit = append(h.audit, action+":"+outcome)
			h.amu.Unlock()
		}})
	return h
}

func (h *harness) add(spec api.VMMigrationSpec, state string) string {
	m := &api.VMMigration{Meta: api.Meta{Name: "m1", Project: "p1", UID: "uid-1"}, Spec: spec, Status: api.VMMigrationStatus{State: state}}
	h.recs.recs[m.Key()] = m
	return m.Key()
}

// until ticks the controller until the record satisfies done.
func (h *harness) until(t *testing.T, ctx context.Context, key string, done func(*api.VMMigration) bool) *api.VMMigration {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		h.c.tick(ctx, h.recs, true)
		if m, ok := h.recs.Get(key); ok && done(m) {
			return m
		}
		time.Sleep(10 * time.Millisecond)
	}
	m, _ := h.recs.Get(key)
	t.Fatalf("the record never got there: %+v", m)
	return nil
}

func stateIs(states ...string) func(*api.VMMigration) bool {
	return func(m *api.VMMigration) bool {
		for _, s := range states {
			if m.Status.State == s {
				return true
			}
		}
		return false
	}
}

// TestPlanSaysWhatCannotMove: the plan names each VM, maps its NICs and
// says why a VM cannot move (one the source cannot read, a name taken
// twice, an unmapped network); a migration started while planned goes on
// to pending.
func TestPlanSaysWhatCannotMove(t *testing.T) {
	h := newHarness(t, 3)
	src := h.c.cfg.Sources.(fakeOpener).src
	src.vms[1].Err = errors.New("domain is gone")
	src.vms[2].Name = "vm-0"
	h.c.cfg.Sources = fakeOpener{src}
	key := h.add(api.VMMigrationSpec{Source: api.VMMigrationSource{Kind: api.MigrationSourceProvider}, NetworkMap: map[string]string{"default": "user"},
		SourceDisposition: api.DispositionPowerOff}, api.VMMigrationPlanning)
	m := h.until(t, context.Background(), key, stateIs(api.VMMigrationPlanned))
	h.c.wg.Wait()
	if len(m.Status.VMs) != 3 || m.Status.Server != "s1" || m.Status.CopyBytes != 3<<20 {
		t.Fatalf("plan %+v", m.Status)
	}
	v0 := m.Status.VMs[0]
	if v0.Name != "vm-0" || v0.SourceID != "id-0" || len(v0.Plan.Blockers) != 0 || v0.Plan.NICs[0].Network != "user" ||
		v0.Plan.Disks[0].Image != "vm-0-root" || !strings.Contains(strings.Join(v0.Plan.Conversions, "\n"), "powered off") {
		t.Errorf("VM 0: %+v %+v", v0, v0.Plan)
	}
	if b := strings.Join(m.Status.VMs[1].Plan.Blockers, "\n"); !strings.Contains(b, "domain is gone") {
		t.Errorf("VM 1's blockers: %s", b)
	}
	if b := strings.Join(m.Status.VMs[2].Plan.Blockers, "\n"); !strings.Contains(b, `already called "vm-0"`) {
		t.Errorf("VM 2's blockers: %s", b)
	}
	h.recs.edit(key, func(m *api.VMMigration) {
		m.Status.State, m.Spec.Start, m.Spec.NetworkMap = api.VMMigrationPlanning, true, nil
	})
	m = h.until(t, context.Background(), key, stateIs(api.VMMigrationPending, api.VMMigrationRunning, api.VMMigrationFailed))
	h.c.wg.Wait()
	if b := strings.Join(m.Status.VMs[0].Plan.Blockers, "\n"); !strings.Contains(b, `source network "default" has no mapping`) {
		t.Errorf("unmapped network: %s", b)
	}
}

// TestRunMovesInWavesAndDisposes: a started migration moves its VMs at
// most Parallel at once, waiting for the project's image import slots
// rather than failing when they are taken; each becomes images and a VM labelled with the
// migration, runs, and its source is powered off; the migration is
// audited and its job directory removed; a VM that cannot move fails
// the migration without stopping the others.
func TestRunMovesInWavesAndDisposes(t *testing.T) {
	h := newHarness(t, 5)
	h.target.slots = 1 // the project's imports: more VMs at once than it takes
	h.target.busyFirst = 3
	ImportRetry = 5 * time.Millisecond
	src := h.c.cfg.Sources.(fakeOpener).src
	src.vms[4].HW.GuestOS = "windows2019srv_64Guest"
	h.c.cfg.Sources = fakeOpener{src}
	key := h.add(api.VMMigrationSpec{Source: api.VMMigrationSource{Kind: api.MigrationSourceProvider}, NetworkMap: map[string]string{"*": "user"},
		Parallel: 2, Start: true, SourceDisposition: api.DispositionPowerOff}, api.VMMigrationPending)
	m := h.until(t, context.Background(), key, stateIs(api.VMMigrationSucceeded, api.VMMigrationFailed))
	h.c.wg.Wait()
	if m.Status.State != api.VMMigrationFailed || !strings.Contains(m.Status.Error, "Windows") {
		t.Fatalf("migration %+v", m.Status)
	}
	for i, v := range m.Status.VMs[:4] {
		if v.State != api.VMMigrationSucceeded || v.Host != "h1" || !strings.Contains(strings.Join(v.Notes, ","), "source powered off") {
			t.Errorf("VM %d: %+v", i, v)
		}
		vm, _ := h.target.VM(context.Background(), "p1", v.Name)
		if vm == nil || vm.Labels[LabelMigration] != "uid-1" || vm.Spec.MemoryMiB != 128 {
			t.Errorf("VM %s: %+v", v.Name, vm)
		}
	}
	if m.Status.VMs[4].State != api.VMMigrationFailed {
		t.Errorf("the Windows VM: %+v", m.Status.VMs[4])
	}
	if h.target.most > 2 {
		t.Errorf("%d VMs were created at once, parallel is 2", h.target.most)
	}
	if h.target.busyImports == 0 {
		t.Errorf("no import found the project's slots taken: the test proves nothing")
	}
	if len(h.did) != 4 || !strings.HasPrefix(h.did[0], "poweroff id-") {
		t.Errorf("done to the sources: %v", h.did)
	}
	audit := strings.Join(h.audit, " ")
	if !strings.Contains(audit, "migration.run:success") || !strings.Contains(audit, "migration.source.poweroff:success") || !strings.Contains(audit, "migration.failed:failure") {
		t.Errorf("audit: %s", audit)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "uid-1")); !os.IsNotExist(err) {
		t.Errorf("the job directory: %v", err)
	}
}

// TestCancelRemovesWhatWasHalfMade: a cancel seen while a VM is being
// created stops the run; the VM and its image are removed, the record
// says cancelled, the job directory goes.
func TestCancelRemovesWhatWasHalfMade(t *testing.T) {
	h := newHarness(t, 1)
	h.target.hold = true
	key := h.add(api.VMMigrationSpec{Source: api.VMMigrationSource{Kind: api.MigrationSourceProvider}, NetworkMap: map[string]string{"*": "user"},
		Parallel: 1, Start: true}, api.VMMigrationPending)
	ctx := context.Background()
	h.until(t, ctx, key, func(m *api.VMMigration) bool {
		return len(m.Status.VMs) == 1 && m.Status.VMs[0].Phase == "boot" || h.target.busy()
	})
	h.recs.edit(key, func(m *api.VMMigration) { m.Spec.Cancel = true })
	m := h.until(t, ctx, key, stateIs(api.VMMigrationCancelled))
	h.c.wg.Wait()
	if m.Status.VMs[0].State != api.VMMigrationCancelled {
		t.Errorf("VM %+v", m.Status.VMs[0])
	}
	if len(h.target.vms) != 0 || len(h.target.images) != 0 || strings.Join(h.target.deleted, ",") != "vm/vm-0,image/vm-0-root" {
		t.Errorf("left: VMs %v images %v; deleted %v", h.target.vms, h.target.images, h.target.deleted)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "uid-1")); !os.IsNotExist(err) {
		t.Errorf("the job directory: %v", err)
	}
}

// TestTermEndLeavesTheRun: when the server's term ends mid-run nothing is
// undone and the record stays running, for the next leader to resume; a
// record deleted meanwhile has its half-made VM removed by the next run
// and its job directory swept.
func TestTermEndLeavesTheRun(t *testing.T) {
	h := newHarness(t, 1)
	h.target.hold = true
	key := h.add(api.VMMigrationSpec{Source: api.VMMigrationSource{Kind: api.MigrationSourceProvider}, NetworkMap: map[string]string{"*": "user"},
		Parallel: 1, Start: true}, api.VMMigrationPending)
	term, end := context.WithCancel(context.Background())
	h.until(t, term, key, func(*api.VMMigration) bool { return h.target.busy() })
	end()
	h.c.wg.Wait()
	m, _ := h.recs.Get(key)
	if m.Status.State != api.VMMigrationRunning || len(h.target.deleted) != 0 {
		t.Fatalf("after the term: %+v, deleted %v", m.Status, h.target.deleted)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "uid-1", "copy")); err != nil {
		t.Fatalf("the copy is gone with the term: %v", err)
	}
	// The next term resumes it: the disk copied is kept, the image and
	// the VM made are taken as the migration's own.
	h.target.hold = false
	m = h.until(t, context.Background(), key, stateIs(api.VMMigrationSucceeded, api.VMMigrationFailed))
	h.c.wg.Wait()
	if m.Status.State != api.VMMigrationSucceeded || len(h.target.vms) != 1 {
		t.Fatalf("the resumed run: %+v", m.Status)
	}
	// A directory nobody's record names is swept.
	os.MkdirAll(filepath.Join(h.dir, "orphan", "files"), 0o700)
	h.c.tick(context.Background(), h.recs, true)
	if _, err := os.Stat(filepath.Join(h.dir, "orphan")); !os.IsNotExist(err) {
		t.Errorf("an orphan job directory: %v", err)
	}
}

// TestCutKeepsErrorsInTheirBound: an error over the record's bound is cut
// on a UTF-8 boundary, saying so; one within it is kept whole.
func TestCutKeepsErrorsInTheirBound(t *testing.T) {
	if got := cut("short"); got != "short" {
		t.Errorf("cut(short) = %q", got)
	}
	long := strings.Repeat("é", api.MaxMigrationErrorBytes)
	got := cut(long)
	if len(got) > api.MaxMigrationErrorBytes || !strings.HasSuffix(got, " [...]") || !utf8.ValidString(got) {
		t.Errorf("cut: %d bytes, valid %v, %q...", len(got), utf8.ValidString(got), got[len(got)-10:])
	}
}
