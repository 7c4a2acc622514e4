package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// volumes makes the files of the volumes placed on this host in its
// pools: it creates, grows, snapshots and deletes them with qemu-img, one
// volume at a time, and reports each volume and the pools' capacity.
// Plugging a volume into a VM is the VM's worker's business.
type volumes struct {
	a   *Agent
	log *slog.Logger

	mu      sync.Mutex
	latest  map[string]*api.Volume // by key, what the server last sent
	done    map[string]int64       // generation carried out, by key
	retryAt map[string]time.Time   // of failed volumes
	pools   map[string]*api.Pool
	// poolsDue asks the next pass to report the pools: one is new or
	// changed its spec, or a volume changed what they hold.
	poolsDue bool
	kick     chan struct{}
}

func newVolumes(a *Agent) *volumes {
	return &volumes{a: a, log: a.log.With("component", "volumes"), latest: map[string]*api.Volume{}, done: map[string]int64{},
		retryAt: map[string]time.Time{}, pools: map[string]*api.Pool{}, kick: make(chan struct{}, 1)}
}

func (vs *volumes) wake() {
	select {
	case vs.kick <- struct{}{}:
	default:
	}
}

// update hands over a volume the server sent.
func (vs *volumes) update(v *api.Volume) {
	vs.mu.Lock()
	vs.latest[v.Key()] = v
	vs.mu.Unlock()
	vs.wake()
}

// removed forgets a volume the server no longer has.
func (vs *volumes) removed(key string) {
	vs.mu.Lock()
	delete(vs.latest, key)
	delete(vs.done, key)
	delete(vs.retryAt, key)
	vs.mu.Unlock()
}

// pool records a pool this host is one of the hosts of. A change of its
// status only (this host's own report coming back on the watch, or
// another host's) is no reason to report again.
func (vs *volumes) pool(p *api.Pool) {
	vs.mu.Lock()
	old := vs.pools[p.Name]
	vs.pools[p.Name] = p
	changed := old == nil || old.Generation != p.Generation
	vs.poolsDue = vs.poolsDue || changed
	vs.mu.Unlock()
	if changed {
		vs.wake()
	}
}

// imageDir is where this host keeps images: the image store of the first
// (by name) shared pool with images on, "" for the host's own cache.
func (vs *volumes) imageDir() string {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	best := ""
	for name, p := range vs.pools {
		if p.Spec.Kind == api.PoolShared && p.Spec.Images && (best == "" || name < best) {
			best = name
		}
	}
	if best == "" {
		return ""
	}
	return filepath.Join(vs.pools[best].Spec.Path, ".images")
}

// poolRemoved forgets a pool that is gone, ending its nbd daemon if this
// host ran it.
func (vs *volumes) poolRemoved(ctx context.Context, name string) {
	vs.mu.Lock()
	p := vs.pools[name]
	delete(vs.pools, name)
	vs.mu.Unlock()
	if vs.nbdServing(p) {
		vs.stopNBD(ctx, p)
	}
}

// run carries out the volumes' specs until ctx ends.
func (vs *volumes) run(ctx context.Context) {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		vs.pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-vs.kick:
		case <-tick.C:
			vs.mu.Lock()
			vs.poolsDue = true
			vs.mu.Unlock()
		}
	}
}

// pass converges every volume whose spec changed or whose retry is due,
// then reports the pools when due.
func (vs *volumes) pass(ctx context.Context) {
	vs.mu.Lock()
	var todo []*api.Volume
	now := time.Now()
	for k, v := range vs.latest {
		at, failed := vs.retryAt[k]
		if vs.done[k] != v.Generation && (!failed || !now.Before(at)) {
			todo = append(todo, v)
		}
	}
	due := vs.poolsDue || len(todo) > 0
	vs.poolsDue = false
	var pools []*api.Pool
	for _, p := range vs.pools {
		if due {
			pools = append(pools, p)
		}
	}
	vs.mu.Unlock()
	for _, v := range todo {
		vs.converge(ctx, v)
	}
	for _, p := range pools {
		vs.reportPool(ctx, p)
	}
}

func (vs *volumes) converge(ctx context.Context, v *api.Volume) {
	key := v.Key()
	log := vs.log.With("volume", key)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	vs.mu.Lock()
	pool := vs.pools[v.Spec.Pool]
	vs.mu.Unlock()
	nbd := vs.nbdServing(pool)
	if v.Spec.Deletion != nil {
		var err error
		if nbd {
			err = vs.unexport(ctx, pool, v)
		}
		if err == nil {
			err = removeVolumeFiles(v.Spec.Path)
		}
		if err == nil {
			err = vs.a.c.VolumeRemoved(ctx, vs.a.cfg.Host, key)
		}
		if err != nil {
			log.Warn("deleting volume", "err", err)
			vs.failed(key)
			return
		}
		log.Info("volume deleted")
		vs.removed(key)
		return
	}
	var st api.VolumeStatus
	var err error
	if nbd && v.Spec.AttachedTo == "" && needsLock(ctx, v) {
		// qemu-img needs the file's lock, which the daemon holds. A
		// volume with nothing to change keeps its export: a detach
		// changes nothing in the file, and taking the export down
		// would wait for the VM's host to let go of it.
		err = vs.unexport(ctx, pool, v)
	}
	if err == nil {
		st, err = vs.make(ctx, v, pool)
	}
	if err == nil && nbd {
		err = vs.export(ctx, pool, v)
	}
	st.ObservedGeneration = v.Generation
	if err != nil {
		log.Warn("making volume", "err", err)
		st.State, st.Error = api.VolumeError, err.Error()
	} else {
		st.State = api.VolumeReady
	}
	if rerr := vs.a.c.PutVolumeStatus(ctx, vs.a.cfg.Host, key, st); rerr != nil {
		log.Warn("reporting volume", "err", rerr)
		err = errors.Join(err, rerr)
	}
	vs.mu.Lock()
	if err != nil {
		vs.retryAt[key] = time.Now().Add(10 * time.Second)
	} else {
		vs.done[key] = v.Generation
		delete(vs.retryAt, key)
	}
	vs.mu.Unlock()
}

func (vs *volumes) failed(key string) {
	vs.mu.Lock()
	vs.retryAt[key] = time.Now().Add(10 * time.Second)
	vs.mu.Unlock()
}

// make brings the volume's files to its spec: the file made (from its
// source) if missing, grown, its snapshots made and the ones no longer
// wanted removed. It returns what the files are.
func (vs *volumes) make(ctx context.Context, v *api.Volume, pool *api.Pool) (api.VolumeStatus, error) {
	st := api.VolumeStatus{Path: v.Spec.Path}
	path := v.Spec.Path
	if !filepath.IsAbs(path) || !strings.HasSuffix(path, ".qcow2") {
		return st, fmt.Errorf("volume path %q is not an absolute .qcow2 path", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return st, fmt.Errorf("making the volume's directory: %w", err)
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if err := vs.create(ctx, v, pool); err != nil {
			return st, err
		}
	} else if err != nil {
		return st, fmt.Errorf("reading the volume's file: %w", err)
	}
	info, err := imgInfo(ctx, path)
	if err != nil {
		return st, err
	}
	if info.VirtualSize < v.Spec.SizeMiB<<20 {
		// An attached volume held by a running VM is grown by the VM's
		// host through QEMU; qemu-img cannot take its lock then.
		if err := qemuImg(ctx, "resize", "-f", "qcow2", path, strconv.FormatInt(v.Spec.SizeMiB, 10)+"M"); err != nil && v.Spec.AttachedTo == "" {
			return st, fmt.Errorf("growing the volume: %w", err)
		}
		if info, err = imgInfo(ctx, path); err != nil {
			return st, err
		}
	}
	st.SizeMiB, st.AllocatedMiB = info.VirtualSize>>20, (info.ActualSize+1<<20-1)>>20
	for _, snap := range v.Spec.Snapshots {
		sp := snapshotFile(path, snap)
		if _, err := os.Stat(sp); errors.Is(err, fs.ErrNotExist) {
			if err := convertInto(ctx, path, "qcow2", sp, 0, false); err != nil {
				return st, fmt.Errorf("taking snapshot %q: %w", snap, err)
			}
		}
		st.Snapshots = append(st.Snapshots, snap)
	}
	made, _ := filepath.Glob(snapshotFile(path, "*"))
	for _, f := range made {
		name := strings.TrimSuffix(strings.TrimPrefix(f, strings.TrimSuffix(path, ".qcow2")+"@"), ".qcow2")
		if !slices.Contains(v.Spec.Snapshots, name) {
			if err := os.Remove(f); err != nil {
				return st, fmt.Errorf("deleting snapshot %q: %w", name, err)
			}
		}
	}
	return st, nil
}

// create makes a volume's file: blank, or a copy of its source (an image
// from the image cache, another volume or a snapshot, in the same pool),
// written under a temporary name and renamed once whole, so a failure
// leaves nothing behind.
func (vs *volumes) create(ctx context.Context, v *api.Volume, pool *api.Pool) error {
	path, size := v.Spec.Path, v.Spec.SizeMiB
	src := v.Spec.Source
	if src == nil {
		tmp := tempName(path)
		if err := qemuImg(ctx, "create", "-q", "-f", "qcow2", tmp, strconv.FormatInt(size, 10)+"M"); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("creating the volume: %w", err)
		}
		return os.Rename(tmp, path)
	}
	from := src.Path
	if src.Image != "" {
		p, err := vs.a.cache.path(ctx, src.Image, api.ImageDisk)
		if err != nil {
			return fmt.Errorf("fetching the volume's image: %w", err)
		}
		from = p
	}
	if from == "" {
		return errors.New("the volume's source has no path")
	}
	// A detached volume of an nbd pool stays exported, its lock held by
	// the daemon: it is read sharing the lock (nothing writes it).
	share := src.Volume != "" && src.Snapshot == "" && vs.nbdServing(pool)
	if err := convertInto(ctx, from, "qcow2", path, size, share); err != nil {
		return fmt.Errorf("copying the volume's source: %w", err)
	}
	return nil
}

// convertInto copies the qcow2 file from into a standalone qcow2 file to
// (no backing file: QEMU opens volumes by descriptor only), grown to
// sizeMiB when that is larger.
func convertInto(ctx context.Context, from, format, to string, sizeMiB int64, share bool) error {
	tmp := tempName(to)
	args := []string{"convert", "-q", "-f", format, "-O", "qcow2", from, tmp}
	if share {
		args = append(args[:1], append([]string{"-U"}, args[1:]...)...)
	}
	err := qemuImg(ctx, args...)
	if err == nil && sizeMiB > 0 {
		var info imageInfo
		if info, err = imgInfo(ctx, tmp); err == nil && info.VirtualSize < sizeMiB<<20 {
			err = qemuImg(ctx, "resize", "-q", "-f", "qcow2", tmp, strconv.FormatInt(sizeMiB, 10)+"M")
		}
	}
	if err == nil {
		err = os.Rename(tmp, to)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

func tempName(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
}

// snapshotFile is the file of a volume's snapshot: "<volume>@<snap>.qcow2".
func snapshotFile(path, snap string) string {
	return strings.TrimSuffix(path, ".qcow2") + "@" + snap + ".qcow2"
}

// removeVolumeFiles deletes a volume's file and its snapshots.
func removeVolumeFiles(path string) error {
	files, _ := filepath.Glob(snapshotFile(path, "*"))
	for _, f := range append(files, path, tempName(path)) {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("deleting volume file: %w", err)
		}
	}
	return nil
}

type imageInfo struct {
	VirtualSize int64 `json:"virtual-size"`
	ActualSize  int64 `json:"actual-size"`
}

// imgInfo reads a qcow2 file's sizes, sharing it with a QEMU that holds it.
// needsLock tells whether making v changes its file with qemu-img, which
// needs the file's lock: a file to create, a size to grow to, a snapshot
// to take. Unsure (the file unreadable), it says so.
func needsLock(ctx context.Context, v *api.Volume) bool {
	info, err := imgInfo(ctx, v.Spec.Path)
	if err != nil || info.VirtualSize < v.Spec.SizeMiB<<20 {
		return true
	}
	for _, snap := range v.Spec.Snapshots {
		if _, err := os.Stat(snapshotFile(v.Spec.Path, snap)); err != nil {
			return true
		}
	}
	return false
}

func imgInfo(ctx context.Context, path string) (imageInfo, error) {
	var info imageInfo
	out, err := exec.CommandContext(ctx, "qemu-img", "info", "-U", "-f", "qcow2", "--output=json", path).Output()
	if err != nil {
		return info, fmt.Errorf("reading volume %s: %w", path, cmdErr(err))
	}
	if err := json.Unmarshal(out, &info); err != nil {
		return info, fmt.Errorf("reading volume %s: %w", path, err)
	}
	return info, nil
}

func qemuImg(ctx context.Context, args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("qemu-img %s: %w: %s", args[0], err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

func cmdErr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
	}
	return err
}

// reportPool tells the server the capacity of the pool's filesystem on
// this host and what the pool's files take.
func (vs *volumes) reportPool(ctx context.Context, p *api.Pool) {
	st := api.PoolHostStatus{Host: vs.a.cfg.Host}
	if p.Spec.Kind == api.PoolNBD && !vs.nbdServing(p) {
		// The files are on the serving host, which reports their
		// capacity; this host reports whether it reaches the daemon.
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		if conn, err := d.DialContext(dctx, "tcp", p.Spec.Address); err != nil {
			st.Error = fmt.Sprintf("reaching the pool's nbd server: %v", err)
		} else {
			conn.Close()
		}
		cancel()
		if err := vs.a.c.PutPoolStatus(ctx, vs.a.cfg.Host, p.Name, st); err != nil && ctx.Err() == nil {
			vs.log.Warn("reporting pool", "pool", p.Name, "err", err)
		}
		return
	}
	if err := os.MkdirAll(p.Spec.Path, 0o700); err != nil {
		st.Error = fmt.Sprintf("making the pool's directory: %v", err)
	} else {
		var fsst syscall.Statfs_t
		if err := syscall.Statfs(p.Spec.Path, &fsst); err != nil {
			st.Error = fmt.Sprintf("reading the pool's filesystem: %v", err)
		} else {
			st.TotalMiB = int64(fsst.Blocks) * fsst.Bsize >> 20
			st.FreeMiB = int64(fsst.Bavail) * fsst.Bsize >> 20
		}
		var used int64
		_ = filepath.WalkDir(p.Spec.Path, func(_ string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
						used += sys.Blocks * 512
					}
				}
			}
			return nil
		})
		st.UsedMiB = used >> 20
		if vs.nbdServing(p) {
			if err := vs.syncExports(ctx, p); err != nil {
				st.Error = fmt.Sprintf("serving the pool's volumes: %v", err)
			}
		}
	}
	if err := vs.a.c.PutPoolStatus(ctx, vs.a.cfg.Host, p.Name, st); err != nil && ctx.Err() == nil {
		vs.log.Warn("reporting pool", "pool", p.Name, "err", err)
	}
}

// denyGuests keeps the host's guests away from the endpoints the server
// names (every nbd pool's export: they carry no authentication, and a
// guest's user-mode NIC connects from the host's own network stack). A
// driver that cannot is logged loudly; the endpoints stay reachable.
func (a *Agent) denyGuests(ctx context.Context, list []string) {
	var eps []netip.AddrPort
	for _, s := range list {
		ep, err := netip.ParseAddrPort(s)
		if err != nil {
			a.log.Warn("ignoring a storage endpoint to deny guests", "endpoint", s, "err", err)
			continue
		}
		eps = append(eps, ep)
	}
	d, ok := a.driver.(hypervisor.GuestDenier)
	if !ok {
		if len(eps) > 0 {
			a.log.Error("this host's driver cannot keep guests from storage endpoints: nbd pools' exports are reachable from its guests", "driver", a.driver.Name(), "endpoints", list)
		}
		return
	}
	if err := d.DenyGuests(ctx, eps); err != nil {
		a.log.Error("keeping guests from storage endpoints", "endpoints", list, "err", err)
		return
	}
	if len(eps) > 0 {
		a.log.Info("guests kept from storage endpoints", "endpoints", list)
	}
}
