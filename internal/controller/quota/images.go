package quota

import (
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"syscall"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Images bounds image imports: how many run at once in a project, and
// the storage a project's images take against its quota.
//
// An import holds a slot from before its upload is received (or its URL
// fetched) until it ends. Before anything is converted it reserves the
// most its stored file can take (qemu-img's measure); the reservation
// counts in the project's usage until the import ends, when the stored
// image's own size, already in the index, replaces it. The check and the
// reservation are one step under the gate's lock, so two imports cannot
// both fit in the same room. Imports run only in this server (a restart
// fails them), so the gate lives in memory.
type Images struct {
	projects *store.Collection[api.Project]
	images   *store.Collection[api.Image]
	dir      string
	log      *slog.Logger

	mu       sync.Mutex
	slots    map[string]int              // project -> imports running
	reserved map[string]map[string]int64 // project -> operation -> bytes
}

// NewImages makes the gate of the image store in dir.
func NewImages(projects *store.Collection[api.Project], images *store.Collection[api.Image], dir string, log *slog.Logger) *Images {
	if log == nil {
		log = slog.Default()
	}
	return &Images{projects: projects, images: images, dir: dir, log: log,
		slots: map[string]int{}, reserved: map[string]map[string]int64{}}
}

// Acquire takes one of the project's import slots, or answers 429 when
// all max are taken. release is idempotent.
func (g *Images) Acquire(project string, max int) (release func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.slots[project] >= max {
		return nil, &api.Error{
			Code: api.CodeTooManyRequests,
			Message: fmt.Sprintf("project %q already has %d image imports running, the most allowed at once; "+
				"wait for one to finish", project, g.slots[project]),
			Details: map[string]string{"limit": strconv.Itoa(max)},
		}
	}
	g.slots[project]++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			if g.slots[project]--; g.slots[project] <= 0 {
				delete(g.slots, project)
			}
		})
	}, nil
}

// reservedLocked is what the imports under way hold: in project, or in
// every project for "".
func (g *Images) reservedLocked(project string) int64 {
	var n int64
	for p, rs := range g.reserved {
		if project != "" && p != project {
			continue
		}
		for _, b := range rs {
			n += b
		}
	}
	return n
}

// freeSpaceMargin is the room the image store keeps free beyond what
// imports reserve.
const freeSpaceMargin = 1 << 30

// Reserve holds bytes of the project's image storage for the
// import op: refused with 422 when the project's quota has no room for
// them, with 503 when the image store's disk has not. release is
// idempotent.
func (g *Images) Reserve(project, op string, bytes int64) (release func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p, ok := g.projects.Get(project); ok && p.Spec.Quota.ImageStorageMiB != nil {
		limit := *p.Spec.Quota.ImageStorageMiB << 20
		used := g.storedBytes(project) + g.reservedLocked(project)
		if used+bytes > limit {
			return nil, &api.Error{
				Code: api.CodeUnprocessable,
				Message: fmt.Sprintf("quota of project %q exceeded: the image needs up to %s of image storage, %s is free of the %s allowed (%s in use)",
					project, mib(bytes), mib(max(0, limit-used)), mib(limit), mib(used)),
				Details: map[string]string{
					"quota": "imageStorageMiB", "limit": strconv.FormatInt(limit>>20, 10),
					"used": strconv.FormatInt(ceilMiB(used), 10), "requested": strconv.FormatInt(ceilMiB(bytes), 10),
				},
			}
		}
	}
	if free, err := freeBytes(g.dir); err == nil {
		if room := free - g.reservedLocked("") - freeSpaceMargin; bytes > room {
			g.log.Warn("image store full", "dir", g.dir, "free", free, "needed", bytes)
			return nil, &api.Error{Code: api.CodeUnavailable,
				Message: fmt.Sprintf("the server's image store has no room for an image of up to %s; ask an administrator", mib(bytes))}
		}
	}
	if g.reserved[project] == nil {
		g.reserved[project] = map[string]int64{}
	}
	g.reserved[project][op] = bytes
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			delete(g.reserved[project], op)
			if len(g.reserved[project]) == 0 {
				delete(g.reserved, project)
			}
		})
	}, nil
}

// Settle records an import's outcome with write and gives back its hold
// on the project's storage (the reservation op), in one step with the
// write under the gate's lock: usage never counts the image twice, nor
// misses it.
func (g *Images) Settle(project, op string, write func() error) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	err := write()
	delete(g.reserved[project], op)
	if len(g.reserved[project]) == 0 {
		delete(g.reserved, project)
	}
	return err
}

// storedBytes is what the project's stored images take.
func (g *Images) storedBytes(project string) int64 {
	var n int64
	for _, img := range g.images.Select(func(img *api.Image) bool { return img.Project == project }) {
		n += img.SizeBytes
	}
	return n
}

// StorageMiB is the project's image storage usage: its stored images and
// the room its imports under way hold.
func (g *Images) StorageMiB(project string) int64 {
	g.mu.Lock()
	reserved := g.reservedLocked(project)
	g.mu.Unlock()
	return ceilMiB(g.storedBytes(project) + reserved)
}

func ceilMiB(b int64) int64 { return (b + 1<<20 - 1) >> 20 }

// mib writes bytes in MiB, rounded up.
func mib(b int64) string { return strconv.FormatInt(ceilMiB(b), 10) + " MiB" }

// freeBytes is the room left to unprivileged writers on dir's file system.
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("reading free space of %s: %w", dir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}
