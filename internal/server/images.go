package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/images"
	"github.com/polyvisor/polyvisor/internal/labels"
	"github.com/polyvisor/polyvisor/internal/store"
)

func (s *Server) imageRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/images", rule: auth.In(auth.PermImageRead), handler: s.listImages},
		{method: "POST", path: "/v1/images", rule: auth.In(auth.PermImageCreate), handler: s.createImage},
		{method: "GET", path: "/v1/images/{name}", rule: auth.In(auth.PermImageRead), handler: s.getImage},
		{method: "DELETE", path: "/v1/images/{name}", rule: auth.In(auth.PermImageDelete), handler: s.deleteImage},
		{method: "PATCH", path: "/v1/images/{name}", rule: auth.Superadmin, handler: s.updateImage},
		{method: "GET", path: "/v1/image-settings", rule: auth.Superadmin, handler: s.getImageSettings},
		{method: "PUT", path: "/v1/image-settings", rule: auth.Superadmin, handler: s.setImageSettings},
		{method: "GET", path: "/v1/images/{name}/content", rule: auth.In(auth.PermImageRead), handler: s.imageContent},
		{method: "GET", path: "/v1/agent/images/{project}/{name}", rule: auth.Host, handler: s.agentImage, hostOf: s.imageHost},
		{method: "GET", path: "/v1/agent/images/{project}/{name}/content", rule: auth.Host, handler: s.imageContent, hostOf: s.imageHost},
	}
}

// imageHost is, for an agent asking for an image's content, its own host
// when one of its VMs uses the image; to a host any other image does not
// exist.
func (s *Server) imageHost(r *http.Request, id auth.Identity) string {
	if s.place.hostUses(id.Name, imageKeyOf(r)) {
		return id.Name
	}
	return ""
}

// imageKeyOf is the store key of the image a route names: the project is
// in an agent route's path, else the request's project.
func imageKeyOf(r *http.Request) string {
	if p := r.PathValue("project"); p != "" {
		return api.Key(p, r.PathValue("name"))
	}
	return api.Key(requestOf(r).project, r.PathValue("name"))
}

// agentImage describes an image to the agent of a host whose VMs use it.
func (s *Server) agentImage(w http.ResponseWriter, r *http.Request) {
	img, ok := s.images.Get(imageKeyOf(r))
	if !ok {
		s.writeError(w, r, api.NotFound("image", r.PathValue("name")))
		return
	}
	writeJSON(w, http.StatusOK, img)
}

// imageResolver finds the image a VM of project refers to: "name" in the
// project itself, else a public image of that name in the default
// project; "<project>/<name>" in that project, if it is the VM's own or
// the image is public.
func (s *Server) imageResolver(project string) imageLookup {
	return func(ref string) (*api.Image, bool) {
		if p, n := api.SplitKey(ref); p != "" {
			img, ok := s.images.Get(api.Key(p, n))
			return img, ok && (p == project || img.Public)
		}
		if img, ok := s.images.Get(api.Key(project, ref)); ok {
			return img, true
		}
		img, ok := s.images.Get(api.Key(api.DefaultProject, ref))
		return img, ok && img.Public
	}
}

func (s *Server) listImages(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.images, func(q listQuery, img *api.Image) bool {
		return (s.inProject(r, img.Project, auth.PermImageRead) || img.Public) &&
			(q.State == "" || img.State == q.State) && q.sel.Matches(img.Labels)
	}, nil)
}

// getImage shows an image of the request's project, or a public image of
// that name in the default project (as a VM create would find it).
func (s *Server) getImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	img, ok := s.imageResolver(requestOf(r).project)(name)
	if !ok {
		s.writeError(w, r, api.NotFound("image", name))
		return
	}
	writeJSON(w, http.StatusOK, img)
}

// imagePath is where an image's file is stored.
func (s *Server) imagePath(img *api.Image) string {
	return filepath.Join(s.imageDir, img.UID)
}

// createImage imports an image: from a URL the server fetches (JSON body),
// or from the request body itself (application/octet-stream). An upload is
// received and inspected before the answer, so a refused image, or one
// over the project's image storage quota, is refused at once; the
// conversion then runs as the operation. Each import holds one of the
// project's import slots until it ends.
func (s *Server) createImage(w http.ResponseWriter, r *http.Request) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	var req api.ImageCreate
	upload := ct == "application/octet-stream"
	if upload {
		// Refused with its body unread, an upload ends its connection:
		// the answer then leaves at once (a client waiting for 100
		// Continue never sends the body), instead of after the server
		// has read some of the body to keep the connection. Lifted once
		// the body is received.
		w.Header().Set("Connection", "close")
		q := r.URL.Query()
		req.Name, req.Kind = q.Get("name"), q.Get("kind")
	} else if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := validateImageCreate(&req, upload); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	if q := r.URL.Query().Get("public"); upload && q != "" {
		req.Public = q == "true"
	}
	if req.Public && !rq.id.IsSuperadmin() {
		s.writeError(w, r, &api.Error{Code: api.CodeForbidden, Message: "only a superadmin may make an image public"})
		return
	}
	rq.resource = api.Ref{Kind: "image", Name: req.Name, Project: rq.project}
	job := &importJob{project: rq.project, admin: rq.id.IsSuperadmin(), set: s.imageSettings(), reservation: newUID()}
	if !upload {
		// The credentials of a URL, and the values of its query (a
		// pre-signed URL's signature, a token), are used for the
		// download only, from memory: what is stored, shown, logged and
		// audited is the URL without them (images.RedactURL).
		clean, _, err := images.SourceURL(req.URL)
		if err != nil {
			s.writeError(w, r, api.Invalid("url", "%v", err))
			return
		}
		job.fetchURL, req.URL = req.URL, clean
	}
	if _, ok := s.images.Get(api.Key(rq.project, req.Name)); ok {
		s.writeError(w, r, api.Conflict("image %q already exists", req.Name))
		return
	}
	release, err := s.imageGate.acquire(rq.project, job.set.MaxImportsPerProject)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	job.releaseSlot = release
	if upload {
		if err := s.receiveUpload(w, r, &req, job); err != nil {
			job.done()
			s.writeError(w, r, err)
			return
		}
		req.URL = ""
	}
	op, err := s.startImport(r.Context(), &req, job)
	if err != nil {
		job.done()
		if job.src != "" {
			os.Remove(job.src)
		}
		s.writeError(w, r, err)
		return
	}
	w.Header().Del("Connection")
	writeOperation(w, op)
}

// receiveUpload stores an upload's body, inspects it and reserves the
// image storage it needs. An upload whose Content-Length is over what the
// project's quota or the disk has room for is refused before a byte of it
// is read; one that has no Content-Length is cut there (admitSource).
func (s *Server) receiveUpload(w http.ResponseWriter, r *http.Request, req *api.ImageCreate, job *importJob) error {
	hold, err := s.holdSource(job, r.ContentLength)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(s.imageDir, ".upload-*")
	if err != nil {
		return fmt.Errorf("receiving upload: %w", err)
	}
	job.src = f.Name()
	body := &countingReader{r: http.MaxBytesReader(w, r.Body, hold.limit), n: &hold.received}
	_, err = io.Copy(f, body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		err = hold.over
	}
	if err == nil {
		err = s.admitImage(r.Context(), req.Kind, job)
	}
	if err != nil {
		os.Remove(job.src)
		job.src = ""
		return imageError(err)
	}
	return nil
}

// holdSource admits an import's source of the announced length (-1:
// unknown) and records the hold in job.
func (s *Server) holdSource(job *importJob, length int64) (*sourceHold, error) {
	hold, release, err := s.admitSource(job, length)
	if err != nil {
		return nil, err
	}
	job.releaseSource = release
	return hold, nil
}

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

// admitImage inspects the image at job.src and reserves the most its
// stored file can take against the project's quota, before anything is
// converted. The source's hold on the disk ends: what it wrote is in the
// disk's free space now.
func (s *Server) admitImage(ctx context.Context, kind string, job *importJob) error {
	if job.releaseSource != nil {
		job.releaseSource()
	}
	info, err := images.Inspect(ctx, job.src, kind, images.WithMaxVirtualBytes(job.set.MaxVirtualBytes))
	if err != nil {
		return err
	}
	unreserve, err := s.reserveImageStorage(job.project, job.reservation, info.MaxSizeBytes)
	if err != nil {
		return err
	}
	job.unreserve = unreserve
	job.maxStored = info.MaxSizeBytes
	return nil
}

// importJob is what an import carries from its request to its end.
type importJob struct {
	project string
	// admin: the import was asked for by a superadmin, who is told the
	// whole cause of a failure.
	admin bool
	set   api.ImageSettings
	// fetchURL is the URL to download, credentials and query included;
	// it is kept in memory only, for the import's time.
	fetchURL string
	// src is the file to import: the upload, or once fetched the
	// download.
	src string
	// reservation names the job's hold on the project's image storage;
	// maxStored is how much it holds.
	reservation string
	maxStored   int64
	// releaseSlot gives back the import slot, releaseSource the hold on
	// the disk while the source is received, unreserve the storage
	// reservation; each may be called more than once.
	releaseSlot, releaseSource, unreserve func()
}

func (j *importJob) done() {
	for _, f := range []func(){j.releaseSlot, j.releaseSource, j.unreserve} {
		if f != nil {
			f()
		}
	}
}

func validateImageCreate(req *api.ImageCreate, upload bool) error {
	if err := validateName("name", req.Name); err != nil {
		return err
	}
	switch req.Kind {
	case "":
		req.Kind = api.ImageDisk
	case api.ImageDisk, api.ImageKernel, api.ImageInitrd:
	default:
		return api.Invalid("kind", "must be disk, kernel or initrd, not %q", req.Kind)
	}
	if key, err := labels.Validate(req.Labels); err != nil {
		return api.Invalid("labels."+key, "%v", err)
	}
	if !upload && req.URL == "" {
		return api.Invalid("url", "is required (or upload the file as application/octet-stream)")
	}
	return nil
}

// importFailure is what an import's operation tells of err: the whole
// cause to a superadmin who asked for it; to anyone else, what names no
// address, port, status or path of the server's side (the server's log
// has the rest).
func importFailure(err error, opID string, admin bool) *api.Error {
	ae := *toAPIError(imageError(err))
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

// imageError turns an image problem into a 400 naming it.
func imageError(err error) error {
	if images.IsReject(err) {
		return api.Invalid("image", "%v", err)
	}
	return err
}

// importer tracks the imports running in this server so they can be
// cancelled.
type importer struct {
	mu      sync.Mutex
	running map[string]context.CancelFunc
}

func (im *importer) cancel(opID string) bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	c, ok := im.running[opID]
	if ok {
		c()
	}
	return ok
}

// startImport stores the image (importing) and its operation, and runs the
// import in the background; the job is released when it ends.
func (s *Server) startImport(ctx context.Context, req *api.ImageCreate, job *importJob) (*api.Operation, error) {
	project := job.project
	now := time.Now().UTC()
	img := &api.Image{
		Meta:   api.Meta{Name: req.Name, Project: project, UID: newUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
		Public: req.Public,
		Kind:   req.Kind,
		State:  api.ImageImporting,
		Source: req.URL,
	}
	if img.Source == "" {
		img.Source = "upload"
	}
	op := newOperation(api.OpImageImport, api.Ref{Kind: "image", Name: img.Name, UID: img.UID, Project: project}, nil)
	op.Status, op.StartedAt = api.OpRunning, now
	if _, err := s.st.Txn(ctx, s.images.OpCreate(img.Key(), img), s.ops.OpCreate(op.ID, op)); err != nil {
		if errors.Is(err, store.ErrExists) {
			return nil, api.Conflict("image %q already exists", img.Name)
		}
		return nil, fmt.Errorf("storing image %q: %w", img.Name, err)
	}
	s.metrics.opStarted(op.Kind)
	// The import belongs to the server, not to the request: it ends
	// with the server (a restart fails it cleanly).
	ictx, cancel := context.WithCancel(s.life)
	s.imports.mu.Lock()
	s.imports.running[op.ID] = cancel
	s.imports.mu.Unlock()
	s.goBG(func() {
		defer func() {
			s.imports.mu.Lock()
			delete(s.imports.running, op.ID)
			s.imports.mu.Unlock()
			cancel()
			job.done()
		}()
		s.runImport(ictx, img, op, job)
	})
	return op, nil
}

// runImport fetches (when needed) and converts an image, then records the
// outcome. A failed import leaves neither the image nor a file behind.
func (s *Server) runImport(ctx context.Context, img *api.Image, op *api.Operation, job *importJob) {
	log := s.log.With("image", img.Name, "project", img.Project, "op", op.ID)
	prog := newProgressWriter(s, op.ID)
	err := func() error {
		if job.src == "" {
			f, err := os.CreateTemp(s.imageDir, ".fetch-*")
			if err != nil {
				return fmt.Errorf("fetching image: %w", err)
			}
			f.Close()
			job.src = f.Name()
			// The download is refused from its Content-Length, or cut,
			// where the project's quota or the disk has no more room.
			admit := func(length int64) (images.Admission, error) {
				hold, err := s.holdSource(job, length)
				if err != nil {
					return images.Admission{}, err
				}
				return images.Admission{Limit: hold.limit, Over: hold.over, Received: &hold.received}, nil
			}
			if _, err := images.Fetch(ctx, job.fetchURL, job.src, func(p int) { prog.set(p/2, "downloading") },
				images.WithMaxBytes(maxSourceBytes(job.set)), images.WithPolicy(fetchPolicy(job.set)), images.WithAdmit(admit)); err != nil {
				return err
			}
			if err := s.admitImage(ctx, img.Kind, job); err != nil {
				return err
			}
		}
		res, err := images.Import(ctx, job.src, s.imagePath(img), img.Kind, func(p int) { prog.set(50+p/2, "converting") },
			importOptions(job.set, job.maxStored)...)
		// The source goes before the outcome is recorded: an import seen
		// finished has left nothing behind.
		os.Remove(job.src)
		job.src = ""
		if err != nil {
			return err
		}
		ready := store.Clone(img)
		ready.State, ready.SourceFormat, ready.Format = api.ImageReady, res.SourceFormat, res.Format
		ready.SizeBytes, ready.VirtualSizeBytes, ready.SHA256 = res.SizeBytes, res.VirtualSizeBytes, res.SHA256
		ready.UpdatedAt = time.Now().UTC()
		cur, ok := s.images.Get(img.Key())
		if !ok {
			return errors.New("image record vanished during import")
		}
		done := s.currentOp(op.ID)
		done.Status, done.Progress, done.FinishedAt, done.Message = api.OpSucceeded, 100, time.Now().UTC(), ""
		if err := s.settleImport(job, func() error {
			_, err := s.st.Txn(context.Background(), s.images.OpUpdate(img.Key(), ready, cur.Version), s.ops.OpUpdate(op.ID, done, done.Version))
			return err
		}); err != nil {
			return fmt.Errorf("recording imported image: %w", err)
		}
		s.metrics.opFinished(op.Kind, api.OpSucceeded)
		return nil
	}()
	if err == nil {
		log.Info("image imported")
		return
	}
	if job.src != "" {
		os.Remove(job.src)
	}
	os.Remove(s.imagePath(img))
	status := api.OpFailed
	if ctx.Err() != nil {
		status = api.OpCancelled
	}
	log.Warn("image import failed", "err", images.Detail(err))
	failed := s.currentOp(op.ID)
	failed.Status, failed.FinishedAt, failed.Error = status, time.Now().UTC(), importFailure(err, op.ID, job.admin)
	if status == api.OpCancelled {
		// As for a cancelled VM operation: nothing failed.
		failed.Error = nil
	}
	if terr := s.settleImport(job, func() error {
		_, err := s.st.Txn(context.Background(), s.images.OpDelete(img.Key(), 0), s.ops.OpUpdate(op.ID, failed, failed.Version))
		return err
	}); terr != nil {
		log.Error("recording failed import", "err", terr)
	}
	s.metrics.opFinished(op.Kind, status)
}

func (s *Server) currentOp(id string) *api.Operation {
	op, _ := s.ops.Get(id)
	return store.Clone(op)
}

// progressWriter records an operation's progress, at most twice a second.
type progressWriter struct {
	s    *Server
	id   string
	last time.Time
	pct  int
}

func newProgressWriter(s *Server, id string) *progressWriter { return &progressWriter{s: s, id: id} }

func (p *progressWriter) set(pct int, msg string) {
	if pct <= p.pct || (time.Since(p.last) < 500*time.Millisecond && pct < 100) {
		return
	}
	p.pct, p.last = pct, time.Now()
	op := p.s.currentOp(p.id)
	op.Progress, op.Message = pct, msg
	if _, err := p.s.ops.Update(context.Background(), p.id, op, op.Version); err != nil {
		p.s.log.Debug("recording progress", "op", p.id, "err", err)
	}
}

// recoverImports fails the imports a previous server left unfinished.
func (s *Server) recoverImports(ctx context.Context) {
	for _, op := range listAll(s.ops, func(o *api.Operation) bool { return !o.Done() && o.Kind == api.OpImageImport }) {
		failed := store.Clone(op)
		failed.Status, failed.FinishedAt = api.OpFailed, time.Now().UTC()
		failed.Error = &api.Error{Code: api.CodeUnavailable, Message: "the server restarted during the import; import the image again"}
		txn := []store.Op{s.ops.OpUpdate(op.ID, failed, op.Version)}
		if img, ok := s.images.Get(targetKey(op.Target)); ok && img.State == api.ImageImporting {
			os.Remove(s.imagePath(img))
			txn = append(txn, s.images.OpDelete(img.Key(), img.Version))
		}
		if _, err := s.st.Txn(ctx, txn...); err != nil {
			s.log.Warn("failing interrupted import", "op", op.ID, "err", err)
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(s.imageDir, ".*")); len(tmps) > 0 {
		for _, t := range tmps {
			os.Remove(t)
		}
	}
	s.redactImageSources(ctx)
}

// redactImageSources rewrites the source of images stored by an older
// server with their URL's credentials or query values in it, as
// createImage stores it now.
func (s *Server) redactImageSources(ctx context.Context) {
	for _, img := range listAll(s.images, func(img *api.Image) bool { return img.Source != "" && img.Source != "upload" }) {
		clean, redacted, err := images.SourceURL(img.Source)
		if err != nil || !redacted {
			continue
		}
		next := store.Clone(img)
		next.Source = clean
		if _, err := s.images.Update(ctx, img.Key(), next, img.Version); err != nil {
			s.log.Warn("redacting the source of an image", "image", img.Key(), "err", err)
		}
	}
}

// imageInUse names a VM that uses the image (by its key), if any.
func (s *Server) imageInUse(name string) (string, bool) {
	users := listAll(s.vms, func(vm *api.VM) bool {
		if vm.Spec.Boot.Kernel == name || vm.Spec.Boot.Initrd == name {
			return true
		}
		return slices.ContainsFunc(vm.Spec.Disks, func(d api.Disk) bool { return d.Image == name })
	})
	if len(users) == 0 {
		return "", false
	}
	return users[0].Key(), true
}

func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	img, ok := s.images.Get(api.Key(requestOf(r).project, name))
	if !ok {
		s.writeError(w, r, api.NotFound("image", name))
		return
	}
	if img.State == api.ImageImporting {
		s.writeError(w, r, api.Conflict("image %q is being imported", name))
		return
	}
	if vm, used := s.imageInUse(img.Key()); used {
		s.writeError(w, r, api.Conflict("image %q is used by vm %q", name, vm))
		return
	}
	now := time.Now().UTC()
	op := newOperation(api.OpImageDelete, api.Ref{Kind: "image", Name: name, UID: img.UID, Project: img.Project}, nil)
	op.Status, op.StartedAt, op.FinishedAt, op.Progress = api.OpSucceeded, now, now, 100
	if _, err := s.st.Txn(r.Context(), s.images.OpDelete(img.Key(), img.Version), s.ops.OpCreate(op.ID, op)); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := os.Remove(s.imagePath(img)); err != nil && !errors.Is(err, os.ErrNotExist) {
		s.log.Warn("removing image file", "image", name, "err", err)
	}
	s.metrics.opFinished(op.Kind, op.Status)
	writeOperation(w, op)
}

// imageContent serves a ready image's file: to the project's readers
// (public images of the default project included, as getImage finds
// them), and to the agents of the hosts whose VMs use it.
func (s *Server) imageContent(w http.ResponseWriter, r *http.Request) {
	var img *api.Image
	var ok bool
	if r.PathValue("project") != "" {
		img, ok = s.images.Get(imageKeyOf(r))
	} else {
		img, ok = s.imageResolver(requestOf(r).project)(r.PathValue("name"))
	}
	if !ok || img.State != api.ImageReady {
		s.writeError(w, r, api.NotFound("image", r.PathValue("name")))
		return
	}
	f, err := os.Open(s.imagePath(img))
	if err != nil {
		s.writeError(w, r, fmt.Errorf("opening image %q: %w", img.Name, err))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Polyvisor-SHA256", img.SHA256)
	http.ServeContent(w, r, "", img.UpdatedAt, f)
}
