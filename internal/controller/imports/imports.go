// Package imports runs image imports: it fetches an image (when it comes
// from a URL), reserves the storage it may take, converts it into the
// image store and records the outcome. An import runs in the server that
// accepted it, whose image store holds its files.
package imports

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/blobstore"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/controller/quota"
	"github.com/polyvisor/polyvisor/internal/images"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Config is what an importer works on.
type Config struct {
	Writer store.Writer
	Images *store.Collection[api.Image]
	Ops    *store.Collection[api.Operation]
	// Dir is the image store: an image being imported is a file named
	// by its UID; a ready one is the blob of its content in Blobs.
	Dir string
	// Blobs keeps the ready images' files by content, under Dir: images
	// with the same bytes share one file.
	Blobs *blobstore.Store
	// Server names the server the importer runs in: an import runs in
	// the server that accepted it, and its operation says which (its
	// params), so that only that server's restart, or its removal from
	// the control plane, fails it.
	Server string
	// Gate holds the import slots and image storage reservations.
	Gate *quota.Images
	// Metrics counts the imports as operations (none when nil).
	Metrics ops.Metrics
	// ErrorOf turns the cause of a failed import into the error it
	// records.
	ErrorOf func(error) *api.Error
	Logger  *slog.Logger
}

// Importer runs the imports of this server, each in the background, and
// can cancel them.
type Importer struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	life    context.Context // imports end with it
	running map[string]context.CancelFunc
	wg      sync.WaitGroup
}

// New makes an importer. Imports started before Run are bound to
// context.Background until then.
func New(cfg Config) *Importer {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	return &Importer{cfg: cfg, log: cfg.Logger, life: context.Background(), running: map[string]context.CancelFunc{}}
}

type noMetrics struct{}

func (noMetrics) OpStarted(string)          {}
func (noMetrics) OpFinished(string, string) {}

// Bind makes ctx the life of the imports started from now on: they are
// cancelled when it ends.
func (im *Importer) Bind(ctx context.Context) {
	im.mu.Lock()
	im.life = ctx
	im.mu.Unlock()
}

// Wait returns once every import has ended.
func (im *Importer) Wait() { im.wg.Wait() }

// Path is where an image's file is stored: a ready image's is the blob
// of its content, one being imported the file named by its UID.
func (im *Importer) Path(img *api.Image) string {
	if img.State == api.ImageReady && blobstore.Valid(img.SHA256) {
		if !im.cfg.Blobs.Has(img.SHA256) {
			// Kept by its UID by an older server, until this one moves
			// it to the blob store.
			if _, err := os.Stat(im.stagingPath(img)); err == nil {
				return im.stagingPath(img)
			}
		}
		return im.cfg.Blobs.Path(img.SHA256)
	}
	return im.stagingPath(img)
}

// stagingPath is where an image is converted to before it is ready, and
// where a server older than blobs kept its file.
func (im *Importer) stagingPath(img *api.Image) string { return filepath.Join(im.cfg.Dir, img.UID) }

// Blobs is the store of ready images' files.
func (im *Importer) Blobs() *blobstore.Store { return im.cfg.Blobs }

// Release removes a deleted image's file: the blob of its content unless
// another image (of any project) still has the same bytes, and the file
// of an import that did not finish.
func (im *Importer) Release(img *api.Image) error {
	os.Remove(im.stagingPath(img))
	if !blobstore.Valid(img.SHA256) {
		return nil
	}
	return im.cfg.Blobs.Remove(img.SHA256, func() bool { return im.Shared(img.SHA256, img.Key()) })
}

// Shared tells whether an image but the one of key has the content
// digest (ready or not yet replicated here: its record says so).
func (im *Importer) Shared(digest, key string) bool {
	return len(im.cfg.Images.Select(func(o *api.Image) bool {
		return o.SHA256 == digest && o.State == api.ImageReady && o.Key() != key
	})) > 0
}

// TempFile makes a file in the image store for an upload or a download;
// Recover removes the ones a previous server left.
func (im *Importer) TempFile(kind string) (*os.File, error) {
	return os.CreateTemp(im.cfg.Dir, "."+kind+"-*")
}

// Job is what an import carries from its request to its end.
type Job struct {
	Project string
	// Admin: the import was asked for by a superadmin, who is told the
	// whole cause of a failure.
	Admin    bool
	Settings api.ImageSettings
	// FetchURL is the URL to download, credentials and query included;
	// it is kept in memory only, for the import's time.
	FetchURL string
	// Src is the file to import: the upload, or once fetched the
	// download.
	Src string
	// Reservation names the job's hold on the project's image storage;
	// maxStored is how much it holds.
	Reservation string
	maxStored   int64
	// ReleaseSlot gives back the import slot, releaseSource the hold on
	// the disk while the source is received, unreserve the storage
	// reservation; each may be called more than once.
	ReleaseSlot   func()
	releaseSource func()
	unreserve     func()
}

// Done gives back what the job holds: its import slot, its hold on the
// disk and its storage reservation.
func (j *Job) Done() {
	for _, f := range []func(){j.ReleaseSlot, j.releaseSource, j.unreserve} {
		if f != nil {
			f()
		}
	}
}

// HoldSource admits the job's source of the announced length (-1:
// unknown) before any of it is received: refused at once when the length
// is over the size limit, what the project's quota has free or the room
// on the disk; otherwise held on the disk, up to the hold's limit, until
// Admit (see quota.Images.AdmitSource).
func (im *Importer) HoldSource(job *Job, length int64) (*quota.SourceHold, error) {
	hold, release, err := im.cfg.Gate.AdmitSource(quota.Source{Project: job.Project, Reservation: job.Reservation, Length: length,
		MaxBytes: MaxSourceBytes(job.Settings), MaxVirtualBytes: job.Settings.MaxVirtualBytes})
	if err != nil {
		return nil, err
	}
	job.releaseSource = release
	return hold, nil
}

// Admit inspects the image at job.Src and reserves the most its stored
// file can take against the project's quota, before anything is
// converted. The source's hold on the disk ends: what it wrote is in the
// disk's free space now.
func (im *Importer) Admit(ctx context.Context, kind string, job *Job) error {
	if job.releaseSource != nil {
		job.releaseSource()
	}
	info, err := images.Inspect(ctx, job.Src, kind, images.WithMaxVirtualBytes(job.Settings.MaxVirtualBytes))
	if err != nil {
		return err
	}
	unreserve, err := im.cfg.Gate.Reserve(job.Project, job.Reservation, info.MaxSizeBytes)
	if err != nil {
		return err
	}
	job.unreserve = unreserve
	job.maxStored = info.MaxSizeBytes
	return nil
}

// Cancel cancels the import of operation opID, if it runs here.
func (im *Importer) Cancel(opID string) bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	c, ok := im.running[opID]
	if ok {
		c()
	}
	return ok
}

// Start stores the image (importing) and its operation, and runs the
// import in the background; the job is released when it ends.
func (im *Importer) Start(ctx context.Context, img *api.Image, job *Job) (*api.Operation, error) {
	now := time.Now().UTC()
	op := ops.NewOperation(api.OpImageImport, api.Ref{Kind: "image", Name: img.Name, UID: img.UID, Project: img.Project}, importParams{Server: im.cfg.Server})
	op.Status, op.StartedAt = api.OpRunning, now
	if _, err := im.cfg.Writer.Txn(ctx, im.cfg.Images.OpCreate(img.Key(), img), im.cfg.Ops.OpCreate(op.ID, op)); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, api.Conflict("image %q already exists", img.Name)
		}
		return nil, fmt.Errorf("storing image %q: %w", img.Name, err)
	}
	im.cfg.Metrics.OpStarted(op.Kind)
	// The import belongs to the server, not to the request: it ends
	// with the server (a restart fails it cleanly).
	im.mu.Lock()
	ictx, cancel := context.WithCancel(im.life)
	im.running[op.ID] = cancel
	im.wg.Add(1)
	im.mu.Unlock()
	go func() {
		defer im.wg.Done()
		defer func() {
			im.mu.Lock()
			delete(im.running, op.ID)
			im.mu.Unlock()
			cancel()
			job.Done()
		}()
		im.run(ictx, img, op, job)
	}()
	return op, nil
}

// run fetches (when needed) and converts an image, then records the
// outcome. A failed import leaves neither the image nor a file behind.
func (im *Importer) run(ctx context.Context, img *api.Image, op *api.Operation, job *Job) {
	log := im.log.With("image", img.Name, "project", img.Project, "op", op.ID)
	prog := &progressWriter{im: im, id: op.ID}
	err := func() error {
		if job.Src == "" {
			f, err := im.TempFile("fetch")
			if err != nil {
				return fmt.Errorf("fetching image: %w", err)
			}
			f.Close()
			job.Src = f.Name()
			// The download is refused from its Content-Length, or cut,
			// where the project's quota or the disk has no more room.
			admit := func(length int64) (images.Admission, error) {
				hold, err := im.HoldSource(job, length)
				if err != nil {
					return images.Admission{}, err
				}
				return images.Admission{Limit: hold.Limit, Over: hold.Over, Received: &hold.Received}, nil
			}
			if _, err := images.Fetch(ctx, job.FetchURL, job.Src, func(p int) { prog.set(p/2, "downloading") },
				images.WithMaxBytes(MaxSourceBytes(job.Settings)), images.WithPolicy(fetchPolicy(job.Settings)), images.WithAdmit(admit)); err != nil {
				return err
			}
			if err := im.Admit(ctx, img.Kind, job); err != nil {
				return err
			}
		}
		res, err := images.Import(ctx, job.Src, im.stagingPath(img), img.Kind, func(p int) { prog.set(50+p/2, "converting") },
			importOptions(job.Settings, job.maxStored)...)
		// The source goes before the outcome is recorded: an import seen
		// finished has left no file of its own behind.
		os.Remove(job.Src)
		job.Src = ""
		if err != nil {
			return err
		}
		ready := store.Clone(img)
		ready.State, ready.SourceFormat, ready.Format = api.ImageReady, res.SourceFormat, res.Format
		ready.SizeBytes, ready.VirtualSizeBytes, ready.SHA256 = res.SizeBytes, res.VirtualSizeBytes, res.SHA256
		ready.UpdatedAt = time.Now().UTC()
		cur, ok := im.cfg.Images.Get(img.Key())
		if !ok {
			return errors.New("image record vanished during import")
		}
		done := im.currentOp(op.ID)
		done.Status, done.Progress, done.FinishedAt, done.Message = api.OpSucceeded, 100, time.Now().UTC(), ""
		// The file becomes the blob of its content (or goes, when an
		// image with the same bytes is stored already) and the image
		// ready, in one step as far as a delete of that other image can
		// tell: it then keeps the blob.
		if err := im.cfg.Blobs.Put(im.stagingPath(img), res.SHA256, func() error {
			return im.settle(job, func() error {
				_, err := im.cfg.Writer.Txn(context.Background(), im.cfg.Images.OpUpdate(img.Key(), ready, cur.Version), im.cfg.Ops.OpUpdate(op.ID, done, done.Version))
				return err
			})
		}); err != nil {
			return fmt.Errorf("recording imported image: %w", err)
		}
		im.cfg.Metrics.OpFinished(op.Kind, api.OpSucceeded)
		return nil
	}()
	if err == nil {
		log.Info("image imported")
		return
	}
	if job.Src != "" {
		os.Remove(job.Src)
	}
	os.Remove(im.stagingPath(img))
	status := api.OpFailed
	if ctx.Err() != nil {
		status = api.OpCancelled
	}
	log.Warn("image import failed", "err", images.Detail(err))
	failed := im.currentOp(op.ID)
	failed.Status, failed.FinishedAt, failed.Error = status, time.Now().UTC(), im.failure(err, op.ID, job.Admin)
	if status == api.OpCancelled {
		// As for a cancelled VM operation: nothing failed.
		failed.Error = nil
	}
	if terr := im.settle(job, func() error {
		_, err := im.cfg.Writer.Txn(context.Background(), im.cfg.Images.OpDelete(img.Key(), 0), im.cfg.Ops.OpUpdate(op.ID, failed, failed.Version))
		return err
	}); terr != nil {
		log.Error("recording failed import", "err", terr)
	}
	im.cfg.Metrics.OpFinished(op.Kind, status)
}

// settle records an import's outcome with write and gives back the job's
// slot and its hold on the project's storage, the hold in one step with
// the write: usage never counts the image twice, nor misses it, and an
// operation seen finished has freed its slot.
func (im *Importer) settle(job *Job, write func() error) error {
	if job.ReleaseSlot != nil {
		job.ReleaseSlot()
	}
	return im.cfg.Gate.Settle(job.Project, job.Reservation, write)
}

func (im *Importer) currentOp(id string) *api.Operation {
	op, _ := im.cfg.Ops.Get(id)
	return store.Clone(op)
}

// progressWriter records an operation's progress, at most twice a second.
type progressWriter struct {
	im   *Importer
	id   string
	last time.Time
	pct  int
}

func (p *progressWriter) set(pct int, msg string) {
	if pct <= p.pct || (time.Since(p.last) < 500*time.Millisecond && pct < 100) {
		return
	}
	p.pct, p.last = pct, time.Now()
	op := p.im.currentOp(p.id)
	op.Progress, op.Message = pct, msg
	if _, err := p.im.cfg.Writer.Txn(context.Background(), p.im.cfg.Ops.OpUpdate(p.id, op, op.Version)); err != nil {
		p.im.log.Debug("recording progress", "op", p.id, "err", err)
	}
}

// importParams are an import operation's params.
type importParams struct {
	// Server is the server that runs the import.
	Server string `json:"server,omitempty"`
}

// serverOf is the server that runs an import ("" for one recorded before
// imports said so).
func serverOf(op *api.Operation) string {
	var p importParams
	_ = json.Unmarshal(op.Params, &p)
	return p.Server
}

// Recover fails the imports this server left unfinished when it stopped
// (and those recorded before imports named their server), and removes
// their files.
func (im *Importer) Recover(ctx context.Context) {
	im.fail(ctx, func(server string) bool { return server == "" || server == im.cfg.Server },
		"the server restarted during the import; import the image again")
	if tmps, _ := filepath.Glob(filepath.Join(im.cfg.Dir, ".*")); len(tmps) > 0 {
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	im.RedactSources(ctx)
}

// FailServer fails the imports server was running: it left the control
// plane and will not finish them.
func (im *Importer) FailServer(ctx context.Context, server string) {
	im.fail(ctx, func(s string) bool { return s == server },
		fmt.Sprintf("server %s, which ran the import, left the control plane; import the image again", server))
}

// fail fails the unfinished imports of the servers mine selects.
func (im *Importer) fail(ctx context.Context, mine func(server string) bool, why string) {
	for _, op := range im.cfg.Ops.Select(func(o *api.Operation) bool { return !o.Done() && o.Kind == api.OpImageImport && mine(serverOf(o)) }) {
		failed := store.Clone(op)
		failed.Status, failed.FinishedAt = api.OpFailed, time.Now().UTC()
		failed.Error = &api.Error{Code: api.CodeUnavailable, Message: why}
		txn := []store.Op{im.cfg.Ops.OpUpdate(op.ID, failed, op.Version)}
		if img, ok := im.cfg.Images.Get(ops.TargetKey(op.Target)); ok && img.State == api.ImageImporting {
			os.Remove(im.stagingPath(img))
			txn = append(txn, im.cfg.Images.OpDelete(img.Key(), img.Version))
		}
		if _, err := im.cfg.Writer.Txn(ctx, txn...); err != nil {
			im.log.Warn("failing interrupted import", "op", op.ID, "err", err)
		}
	}
}

// RedactSources rewrites the source of images stored by an older server
// with their URL's credentials or query values in it, as an import stores
// it now.
func (im *Importer) RedactSources(ctx context.Context) {
	for _, img := range im.cfg.Images.Select(func(img *api.Image) bool { return img.Source != "" && img.Source != "upload" }) {
		clean, redacted, err := images.SourceURL(img.Source)
		if err != nil || !redacted {
			continue
		}
		next := store.Clone(img)
		next.Source = clean
		if _, err := im.cfg.Writer.Txn(ctx, im.cfg.Images.OpUpdate(img.Key(), next, img.Version)); err != nil {
			im.log.Warn("redacting the source of an image", "image", img.Key(), "err", err)
		}
	}
}

// failure is what an import's operation tells of err: the whole cause to
// a superadmin who asked for it; to anyone else, what names no address,
// port, status or path of the server's side (the server's log has the
// rest).
func (im *Importer) failure(err error, opID string, admin bool) *api.Error {
	ae := *im.errorOf(ImageError(err))
	var fe *images.FetchError
	switch {
	case errors.As(err, &fe):
		ae = api.Error{Code: api.CodeUnavailable, Message: fe.Error()}
	case ae.Code == api.CodeInternal:
		ae.Message = fmt.Sprintf("the import failed on the server; its log has the cause (operation %s)", opID)
	}
	if admin {
		if ae.Code == api.CodeInvalid || errors.As(err, &fe) || ae.Code == api.CodeInternal {
			ae.Message = images.Detail(err)
		}
	}
	return &ae
}

func (im *Importer) errorOf(err error) *api.Error {
	if im.cfg.ErrorOf != nil {
		return im.cfg.ErrorOf(err)
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	return &api.Error{Code: api.CodeInternal, Message: "internal error"}
}

// ImageError turns an image problem into a 400 naming it.
func ImageError(err error) error {
	if images.IsReject(err) {
		return api.Invalid("image", "%v", err)
	}
	return err
}

// fetchPolicy is where URL imports may connect under set.
func fetchPolicy(set api.ImageSettings) images.FetchPolicy {
	var p images.FetchPolicy
	for _, n := range set.FetchAllowNetworks {
		if pfx, err := netip.ParsePrefix(n); err == nil {
			p.AllowNetworks = append(p.AllowNetworks, pfx)
		}
	}
	for _, h := range set.FetchAllowHosts {
		if h, err := images.ParseAllowHost(h); err == nil {
			p.AllowHosts = append(p.AllowHosts, h)
		}
	}
	return p
}

// MaxSourceBytes bounds an upload or a download: the largest disk
// allowed, with room for its format's metadata.
func MaxSourceBytes(set api.ImageSettings) int64 {
	return set.MaxVirtualBytes + set.MaxVirtualBytes/32 + 64<<20
}

// importOptions are the limits of an import under set, storing at most
// maxStored bytes.
func importOptions(set api.ImageSettings, maxStored int64) []images.ImportOption {
	return []images.ImportOption{
		images.WithMaxVirtualBytes(set.MaxVirtualBytes),
		images.WithMaxStoredBytes(maxStored),
		images.WithConvertTimeout(time.Duration(set.ConvertTimeoutSeconds) * time.Second),
	}
}

// FetchPolicy is where a URL fetched under set may connect: the image
// import's rule, which other fetches of packages (a migration's OVA)
// follow too.
func FetchPolicy(set api.ImageSettings) images.FetchPolicy { return fetchPolicy(set) }
