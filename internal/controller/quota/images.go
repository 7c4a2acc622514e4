package quota

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
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
//
// Before that, while its source (an upload, a download) is received, an
// import holds room on the image store's disk for the most the source may
// still grow by (AdmitSource): the source is refused from its announced
// length, or cut at the smallest of the size limit, the project's room
// and the disk's room, before it can fill either.
type Images struct {
	projects *store.Collection[api.Project]
	images   *store.Collection[api.Image]
	dir      string
	minFree  int64
	log      *slog.Logger

	mu       sync.Mutex
	slots    map[string]int              // project -> imports running
	reserved map[string]map[string]int64 // project -> operation -> bytes
	sources  map[string]*SourceHold      // reservation -> source being received
}

// NewImages makes the gate of the image store in dir, which keeps
// minFree bytes free on its disk (the server's reserve).
func NewImages(projects *store.Collection[api.Project], images *store.Collection[api.Image], dir string, minFree int64, log *slog.Logger) *Images {
	if log == nil {
		log = slog.Default()
	}
	return &Images{projects: projects, images: images, dir: dir, minFree: minFree, log: log,
		slots: map[string]int{}, reserved: map[string]map[string]int64{}, sources: map[string]*SourceHold{}}
}

// SourceHold is an import's hold on the image store's disk while its
// source is received: up to Limit bytes, Received of them written. A
// source that goes past Limit fails with Over.
type SourceHold struct {
	Limit    int64
	Over     error
	Received atomic.Int64
}

// Count makes a reader of r that adds what is read to h.Received.
func (h *SourceHold) Count(r io.Reader) io.Reader { return &countingReader{r: r, n: &h.Received} }

// countingReader adds up the bytes read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// growthLocked is what the sources being received may still write.
func (g *Images) growthLocked() int64 {
	var n int64
	for _, h := range g.sources {
		n += max(0, h.Limit-h.Received.Load())
	}
	return n
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

// imageStoreMargin is the room the image store leaves free beyond the
// server's reserve (--min-free-space), for what the server writes besides
// images: an import never makes the server read-only.
const imageStoreMargin = 64 << 20

// Room a source may take beyond what its project's image storage quota
// has free: see sourceRoom.
const (
	sourceHeadroomFixed = 8 << 20
	sourceHeadroomShare = 64 // 1/64 of the room
)

// sourceRoom is the largest source (upload, download) that can become an
// image of room bytes. A qcow2 stores the data of any source format in
// about as many bytes plus its own tables (some 0.02%): a source is
// larger than the image it makes only by its format's metadata (VHDX's
// headers, log, metadata region and block table take 4 MiB and more,
// VMDK's grain tables and VDI's block map grow with the disk), by the
// internal snapshots of a qcow2, and by blocks of zeros, which qemu-img
// does not store. The headroom covers the metadata; a raw disk that is
// mostly zeros must be converted to qcow2 before it is uploaded into a
// small quota (which also makes the upload far smaller).
func sourceRoom(room int64) int64 {
	if room <= 0 {
		return 0
	}
	return room + room/sourceHeadroomShare + sourceHeadroomFixed
}

// diskRoomLocked is the room on the image store's disk: its free space
// less what sources being received may still write, what conversions
// hold, and the reserve. ok is false when the free space cannot be read.
func (g *Images) diskRoomLocked() (room int64, ok bool) {
	free, err := freeBytes(g.dir)
	if err != nil {
		g.log.Warn("reading the image store's free space", "err", err)
		return 0, false
	}
	return free - g.growthLocked() - g.reservedLocked("") - g.minFree - imageStoreMargin, true
}

// Source is an import's source about to be received.
type Source struct {
	Project string
	// Reservation names the import's holds (see Reserve).
	Reservation string
	// Length is the announced length, -1 when unknown.
	Length int64
	// MaxBytes is the size limit of the settings, for a disk of at most
	// MaxVirtualBytes.
	MaxBytes, MaxVirtualBytes int64
}

// AdmitSource decides, before any of it is received, how large an
// import's source may be, from its announced length: at most its size
// limit, what the project's image storage quota has free (sourceRoom)
// and the room on the image store's disk. A length over one of them is
// refused at once with its error (413, 422 naming the quota, 503);
// otherwise the import holds that room on the disk until release
// (idempotent), and a source that goes past the hold's limit fails with
// hold.Over.
func (g *Images) AdmitSource(src Source) (hold *SourceHold, release func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	type bound struct {
		n    int64
		err  func() error
		disk bool // the server's disk, not a limit of the image or project
	}
	length := src.Length
	bounds := []bound{{n: src.MaxBytes, err: func() error {
		return &api.Error{Code: api.CodeTooLarge, Message: fmt.Sprintf("the image %s over the size limit of %d bytes "+
			"(the largest disk allowed, %d bytes, with room for its format's metadata)", sized(length), src.MaxBytes, src.MaxVirtualBytes)}
	}}}
	if p, ok := g.projects.Get(src.Project); ok && p.Spec.Quota.ImageStorageMiB != nil {
		limit := *p.Spec.Quota.ImageStorageMiB << 20
		used := g.storedBytes(src.Project) + g.reservedLocked(src.Project)
		room := max(0, limit-used)
		bounds = append(bounds, bound{n: sourceRoom(room), err: func() error {
			return &api.Error{
				Code: api.CodeUnprocessable,
				Message: fmt.Sprintf("quota of project %q exceeded: the image %s more than can fit in the %s of image storage free "+
					"(%s allowed, %s in use)", src.Project, sized(length), strconv.FormatInt(room>>20, 10)+" MiB", mib(limit), mib(used)),
				Details: map[string]string{
					"quota": "imageStorageMiB", "limit": strconv.FormatInt(limit>>20, 10),
					"used": strconv.FormatInt(ceilMiB(used), 10), "requested": strconv.FormatInt(ceilMiB(max(length, sourceRoom(room)+1)), 10),
				},
			}
		}})
	}
	if room, ok := g.diskRoomLocked(); ok {
		bounds = append(bounds, bound{n: max(0, room), disk: true, err: func() error {
			return &api.Error{Code: api.CodeUnavailable,
				Message: fmt.Sprintf("the server's image store has no room for this image (it %s more than the room left); ask an administrator", sized(length))}
		}})
	}
	tight := bounds[0]
	for _, b := range bounds[1:] {
		if b.n < tight.n {
			tight = b
		}
	}
	if tight.n <= 0 || length > tight.n {
		if tight.disk {
			g.log.Warn("image store full", "dir", g.dir, "room", tight.n, "length", length)
		}
		return nil, nil, tight.err()
	}
	hold = &SourceHold{Limit: tight.n, Over: tight.err()}
	if length >= 0 {
		hold.Limit = length
	}
	g.sources[src.Reservation] = hold
	var once sync.Once
	return hold, func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			delete(g.sources, src.Reservation)
		})
	}, nil
}

// sized says how large a source is, for people: "is 600 MiB," when its
// length was announced, "is" when it was cut while received.
func sized(length int64) string {
	if length < 0 {
		return "is"
	}
	return "is " + mib(length) + ","
}

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
	if room, ok := g.diskRoomLocked(); ok && bytes > room {
		g.log.Warn("image store full", "dir", g.dir, "room", room, "needed", bytes)
		return nil, &api.Error{Code: api.CodeUnavailable,
			Message: fmt.Sprintf("the server's image store has no room for an image of up to %s; ask an administrator", mib(bytes))}
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
