package server

import (
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/imports"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/images"
	"github.com/polyvisor/polyvisor/internal/labels"
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
	if s.ctl.Placer.HostUses(id.Name, imageKeyOf(r)) {
		return id.Name
	}
	// Or a volume the host makes from it.
	key := imageKeyOf(r)
	if len(s.volumes.Select(func(v *api.Volume) bool {
		return v.Spec.Host == id.Name && v.Spec.Source != nil && v.Spec.Source.Image == key && v.Spec.Deletion == nil
	})) > 0 {
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
	job := &imports.Job{Project: rq.project, Admin: rq.id.IsSuperadmin(), Settings: s.imageSettings(), Reservation: api.NewUID()}
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
		job.FetchURL, req.URL = req.URL, clean
	}
	if _, ok := s.images.Get(api.Key(rq.project, req.Name)); ok {
		s.writeError(w, r, api.Conflict("image %q already exists", req.Name))
		return
	}
	release, err := s.ctl.Images.Acquire(rq.project, job.Settings.MaxImportsPerProject)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	job.ReleaseSlot = release
	if upload {
		if err := s.receiveUpload(w, r, &req, job); err != nil {
			job.Done()
			s.writeError(w, r, err)
			return
		}
		req.URL = ""
	}
	op, err := s.ctl.Imports.Start(r.Context(), newImage(rq.project, &req), job)
	if err != nil {
		job.Done()
		if job.Src != "" {
			os.Remove(job.Src)
		}
		s.writeError(w, r, err)
		return
	}
	w.Header().Del("Connection")
	writeOperation(w, op)
}

// newImage is the image an import of req makes in project, importing.
func newImage(project string, req *api.ImageCreate) *api.Image {
	now := time.Now().UTC()
	img := &api.Image{
		Meta:   api.Meta{Name: req.Name, Project: project, UID: api.NewUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
		Public: req.Public,
		Kind:   req.Kind,
		State:  api.ImageImporting,
		Source: req.URL,
	}
	if img.Source == "" {
		img.Source = "upload"
	}
	return img
}

// receiveUpload stores an upload's body, inspects it and reserves the
// image storage it needs. An upload whose Content-Length is over what the
// project's quota or the disk has room for is refused before a byte of it
// is read; one that has no Content-Length is cut there (HoldSource).
func (s *Server) receiveUpload(w http.ResponseWriter, r *http.Request, req *api.ImageCreate, job *imports.Job) error {
	hold, err := s.ctl.Imports.HoldSource(job, r.ContentLength)
	if err != nil {
		return err
	}
	f, err := s.ctl.Imports.TempFile("upload")
	if err != nil {
		return fmt.Errorf("receiving upload: %w", err)
	}
	job.Src = f.Name()
	_, err = io.Copy(f, hold.Count(http.MaxBytesReader(w, r.Body, hold.Limit)))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		err = hold.Over
	}
	if err == nil {
		err = s.ctl.Imports.Admit(r.Context(), req.Kind, job)
	}
	if err != nil {
		os.Remove(job.Src)
		job.Src = ""
		return imports.ImageError(err)
	}
	return nil
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
	op := ops.NewOperation(api.OpImageDelete, api.Ref{Kind: "image", Name: name, UID: img.UID, Project: img.Project}, nil)
	op.Status, op.StartedAt, op.FinishedAt, op.Progress = api.OpSucceeded, now, now, 100
	if _, err := s.st.Txn(r.Context(), s.images.OpDelete(img.Key(), img.Version), s.ops.OpCreate(op.ID, op)); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.ctl.Imports.Release(img); err != nil {
		s.log.Warn("removing image file", "image", name, "err", err)
	}
	s.metrics.OpFinished(op.Kind, op.Status)
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
	f, err := os.Open(s.ctl.Imports.Path(img))
	if errors.Is(err, os.ErrNotExist) {
		// Its copy has not reached this server yet: fetch it first.
		if cerr := s.ensureImageFile(r.Context(), img); cerr != nil {
			s.writeError(w, r, &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf("image %q has no copy on this server yet, and none could be fetched from the others; try again", img.Name)})
			s.log.Warn("serving an image this server has no copy of", "image", img.Key(), "err", cerr)
			return
		}
		f, err = os.Open(s.ctl.Imports.Path(img))
	}
	if err != nil {
		s.writeError(w, r, fmt.Errorf("opening image %q: %w", img.Name, err))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("X-Polyvisor-SHA256", img.SHA256)
	http.ServeContent(w, r, "", img.UpdatedAt, f)
}
