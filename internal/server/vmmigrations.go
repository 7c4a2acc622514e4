package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/images"
	"github.com/polyvisor/polyvisor/internal/labels"
	"github.com/polyvisor/polyvisor/internal/store"
)

// Bounds of a VM migration record.
const (
	maxMigrationVMs      = api.MaxMigrationVMs
	maxMigrationParallel = api.MaxMigrationParallel
	// maxProjectMigrations bounds the records a project keeps, so that a
	// member cannot grow the store without limit: finished ones are
	// deleted (DELETE /v1/migrations/{name}) to make room.
	maxProjectMigrations = 100
)

// vmMigrationRoutes: VMs moved from other hypervisors. The leading
// server's migration controller (internal/controller/v2vrun) plans and
// runs them; these routes make, start, feed (uploads), cancel and delete
// them.
func (s *Server) vmMigrationRoutes() []route {
	read, create, del := auth.In(auth.PermVMRead), auth.In(auth.PermVMCreate), auth.In(auth.PermVMDelete)
	return []route{
		{method: "GET", path: "/v1/migrations", rule: read, handler: s.listVMMigrations},
		{method: "POST", path: "/v1/migrations", rule: create, handler: s.createVMMigration},
		{method: "GET", path: "/v1/migrations/{name}", rule: read, handler: s.getVMMigration},
		{method: "PUT", path: "/v1/migrations/{name}/files/{file}", rule: create, handler: s.uploadVMMigrationFile},
		{method: "POST", path: "/v1/migrations/{name}/start", rule: create, handler: s.startVMMigration},
		{method: "POST", path: "/v1/migrations/{name}/cancel", rule: create, handler: s.cancelVMMigration},
		{method: "DELETE", path: "/v1/migrations/{name}", rule: del, handler: s.deleteVMMigration},
	}
}

func (s *Server) listVMMigrations(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.vmMigrations, func(q listQuery, m *api.VMMigration) bool {
		return s.inProject(r, m.Project, auth.PermVMRead) && q.sel.Matches(m.Labels) &&
			(q.State == "" || m.Status.State == q.State)
	}, nil)
}

func (s *Server) vmMigrationOf(r *http.Request) (*api.VMMigration, error) {
	m, ok := s.vmMigrations.Get(api.Key(requestOf(r).project, r.PathValue("name")))
	if !ok {
		return nil, api.NotFound("migration", r.PathValue("name"))
	}
	return m, nil
}

func (s *Server) getVMMigration(w http.ResponseWriter, r *http.Request) {
	m, err := s.vmMigrationOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// checkVMMigration checks a create; every error names its field. It
// cleans the request: defaults set, a URL kept without its password.
func (s *Server) checkVMMigration(r *http.Request, req *api.VMMigrationCreate) error {
	if err := validateName("name", req.Name); err != nil {
		return err
	}
	if key, err := labels.Validate(req.Labels); err != nil {
		return api.Invalid("labels."+key, "%v", err)
	}
	if req.Host != "" {
		if _, ok := s.hosts.Get(req.Host); !ok {
			return &api.Error{Code: api.CodeUnprocessable, Field: "host", Message: fmt.Sprintf("host %q does not exist", req.Host)}
		}
	}
	if req.Parallel == 0 {
		req.Parallel = 2
	}
	if req.Parallel < 1 || req.Parallel > maxMigrationParallel {
		return api.Invalid("parallel", "must be from 1 to %d, not %d", maxMigrationParallel, req.Parallel)
	}
	if len(req.NetworkMap) > 64 {
		return api.Invalid("networkMap", "holds %d networks, at most 64", len(req.NetworkMap))
	}
	for from, to := range req.NetworkMap {
		if from == "" || len(from) > 253 {
			return api.Invalid("networkMap", "a source network must be 1 to 253 characters")
		}
		if to != "user" {
			if err := validateName("networkMap."+from, to); err != nil {
				return err
			}
		}
	}
	rq := requestOf(r)
	switch req.SourceDisposition {
	case "":
		req.SourceDisposition = api.DispositionKeep
	case api.DispositionKeep:
	case api.DispositionPowerOff:
		if !s.can(r, rq.project, auth.PermVMPower) {
			return &api.Error{Code: api.CodeForbidden, Field: "sourceDisposition", Message: "powering the source off needs vm.power in the project"}
		}
	case api.DispositionDelete:
		if !s.can(r, rq.project, auth.PermVMDelete) {
			return &api.Error{Code: api.CodeForbidden, Field: "sourceDisposition", Message: "deleting the source needs vm.delete in the project"}
		}
	default:
		return api.Invalid("sourceDisposition", "must be keep, poweroff or delete, not %q", req.SourceDisposition)
	}
	if req.Cutover != "" && req.Cutover != api.CutoverAuto {
		return api.Invalid("cutover", "must be auto, not %q", req.Cutover)
	}
	return s.checkMigrationSource(rq.project, req)
}

// checkMigrationSource checks a migration's source. A provider must be
// bound to the migration's project: reading a VM's disks is reading
// everything the VM holds, which only the project it belongs to may.
func (s *Server) checkMigrationSource(project string, req *api.VMMigrationCreate) error {
	src := &req.Source
	if req.SourceDisposition != api.DispositionKeep && src.Kind != api.MigrationSourceProvider {
		return api.Invalid("sourceDisposition", "is for provider sources only (an OVA or a disk file has no VM to power off)")
	}
	switch src.Kind {
	case api.MigrationSourceProvider:
		if src.URL != "" || src.Format != "" || len(src.Files) > 0 || src.Hardware != nil {
			return api.Invalid("source", "a provider source takes provider and vms only")
		}
		p, ok := s.providers.Get(src.Provider)
		if !ok || providerBinding(p) != project {
			return &api.Error{Code: api.CodeUnprocessable, Field: "source.provider", Message: fmt.Sprintf("project %q has no provider %q", project, src.Provider)}
		}
		if len(src.VMs) == 0 || len(src.VMs) > maxMigrationVMs {
			return api.Invalid("source.vms", "must hold 1 to %d VMs, not %d", maxMigrationVMs, len(src.VMs))
		}
		ids, names := map[string]bool{}, map[string]bool{}
		for i, vm := range src.VMs {
			field := fmt.Sprintf("source.vms[%d]", i)
			if vm.ID == "" || len(vm.ID) > 253 {
				return api.Invalid(field+".id", "must be 1 to 253 characters")
			}
			if ids[vm.ID] {
				return api.Invalid(field+".id", "VM %q appears twice", vm.ID)
			}
			ids[vm.ID] = true
			if vm.Name != "" {
				if err := validateName(field+".name", vm.Name); err != nil {
					return err
				}
				if names[vm.Name] {
					return api.Invalid(field+".name", "VM %q appears twice", vm.Name)
				}
				names[vm.Name] = true
			}
		}
	case api.MigrationSourceURL:
		if src.Provider != "" || len(src.VMs) > 0 || len(src.Files) > 0 || src.Hardware != nil {
			return api.Invalid("source", "a url source takes url only")
		}
		clean, _, err := images.SourceURL(src.URL)
		if err != nil {
			return api.Invalid("source.url", "%v", err)
		}
		src.URL, src.Format = clean, api.MigrationFormatOVA
	case api.MigrationSourceUpload:
		if src.Provider != "" || len(src.VMs) > 0 || src.URL != "" {
			return api.Invalid("source", "an upload source takes format, files and hardware only")
		}
		switch src.Format {
		case api.MigrationFormatOVA:
			if len(src.Files) != 1 {
				return api.Invalid("source.files", "an OVA is one file, not %d", len(src.Files))
			}
			if src.Hardware != nil {
				return api.Invalid("source.hardware", "an OVA says its own hardware")
			}
		case api.MigrationFormatDisk:
			if len(src.Files) == 0 || len(src.Files) > api.MaxMigrationFiles {
				return api.Invalid("source.files", "must hold 1 to %d disk files, not %d", api.MaxMigrationFiles, len(src.Files))
			}
			if err := checkMigrationHardware(src.Hardware); err != nil {
				return err
			}
		default:
			return api.Invalid("source.format", "must be ova or disk, not %q", src.Format)
		}
		seen := map[string]bool{}
		for i, f := range src.Files {
			field := fmt.Sprintf("source.files[%d]", i)
			if f.Name == "" || len(f.Name) > 253 || f.Name == "." || f.Name == ".." || strings.ContainsAny(f.Name, "/\\\x00") {
				return api.Invalid(field+".name", "must be a file name (no path), 1 to 253 characters")
			}
			if seen[f.Name] {
				return api.Invalid(field+".name", "file %q appears twice", f.Name)
			}
			seen[f.Name] = true
			if f.SizeBytes <= 0 || f.SizeBytes > maxMigrationFileBytes {
				return api.Invalid(field+".sizeBytes", "must be from 1 byte to %d GiB", maxMigrationFileBytes>>30)
			}
			src.Files[i].Uploaded = false
		}
	default:
		return api.Invalid("source.kind", "must be provider, upload or url, not %q", src.Kind)
	}
	return nil
}

// maxMigrationFileBytes bounds an uploaded file: the largest disk a
// migration takes.
const maxMigrationFileBytes = 16 << 40

func checkMigrationHardware(hw *api.VMMigrationHardware) error {
	if hw == nil {
		return api.Invalid("source.hardware", "is required for disk files (vcpus, memoryMiB, macs...)")
	}
	if hw.Name != "" {
		if err := validateName("source.hardware.name", hw.Name); err != nil {
			return err
		}
	}
	if hw.VCPUs < 0 || hw.VCPUs > 1024 {
		return api.Invalid("source.hardware.vcpus", "must be from 1 to 1024")
	}
	if hw.MemoryMiB < 0 || hw.MemoryMiB > 16<<20 {
		return api.Invalid("source.hardware.memoryMiB", "must be from 1 MiB to 16 TiB")
	}
	switch hw.Firmware {
	case "", "bios", "efi":
	default:
		return api.Invalid("source.hardware.firmware", "must be bios or efi, not %q", hw.Firmware)
	}
	switch hw.DiskBus {
	case "", "virtio", "scsi", "sata", "ide", "nvme":
	default:
		return api.Invalid("source.hardware.diskBus", "must be virtio, scsi, sata, ide or nvme, not %q", hw.DiskBus)
	}
	if len(hw.GuestOS) > 253 {
		return api.Invalid("source.hardware.guestOS", "is over 253 characters")
	}
	if len(hw.MACs) > 16 {
		return api.Invalid("source.hardware.macs", "holds %d NICs, at most 16", len(hw.MACs))
	}
	for i, mac := range hw.MACs {
		if len(mac) > 17 {
			return api.Invalid(fmt.Sprintf("source.hardware.macs[%d]", i), "is not a MAC")
		}
	}
	return nil
}

func (s *Server) createVMMigration(w http.ResponseWriter, r *http.Request) {
	var req api.VMMigrationCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "migration", Name: req.Name, Project: rq.project}
	if err := s.checkVMMigration(r, &req); err != nil {
		s.writeError(w, r, err)
		return
	}
	if n := len(listAll(s.vmMigrations, func(m *api.VMMigration) bool { return m.Project == rq.project })); n >= maxProjectMigrations {
		s.writeError(w, r, api.Unprocessable("project %q holds %d migrations, the most it may: delete finished ones first", rq.project, n))
		return
	}
	now := time.Now().UTC()
	state := api.VMMigrationPlanning
	if req.Source.Kind == api.MigrationSourceUpload {
		state = api.VMMigrationUploading
	}
	m := &api.VMMigration{
		Meta: api.Meta{Name: req.Name, Project: rq.project, UID: api.NewUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
		Spec: api.VMMigrationSpec{Source: req.Source, Host: req.Host, NetworkMap: req.NetworkMap, Parallel: req.Parallel,
			SourceDisposition: req.SourceDisposition, Cutover: req.Cutover, Start: req.Start},
		Status: api.VMMigrationStatus{State: state, CreatedBy: rq.id.Name},
	}
	key := m.Key()
	p, ok := s.projects.Get(rq.project)
	if !ok {
		s.writeError(w, r, api.NotFound("project", rq.project))
		return
	}
	// Held to the project's version: a record made while its project is
	// deleted fails instead of outliving it.
	if _, err := s.st.Txn(r.Context(), s.projects.OpCheck(p.Name, p.Version), s.vmMigrations.OpCreate(key, m)); err != nil {
		switch {
		case errors.Is(err, store.ErrExists):
			err = api.Conflict("migration %q already exists", req.Name)
		case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
			err = api.Conflict("project %q changed meanwhile: try again", rq.project)
		}
		s.writeError(w, r, fmt.Errorf("storing migration %q: %w", req.Name, err))
		return
	}
	m, _ = s.vmMigrations.Get(key)
	writeJSON(w, http.StatusCreated, m)
}

// finalMigration tells whether a migration's state is final.
func finalMigration(state string) bool {
	return state == api.VMMigrationSucceeded || state == api.VMMigrationFailed || state == api.VMMigrationCancelled
}

// updateVMMigration changes the migration the request names with change,
// again on a conflict.
func (s *Server) updateVMMigration(ctx context.Context, r *http.Request, change func(m *api.VMMigration) error) (*api.VMMigration, error) {
	for attempt := 0; attempt < 10; attempt++ {
		cur, err := s.vmMigrationOf(r)
		if err != nil {
			return nil, err
		}
		next := store.Clone(cur)
		if err := change(next); err != nil {
			return nil, err
		}
		next.UpdatedAt = time.Now().UTC()
		_, err = s.st.Txn(ctx, s.vmMigrations.OpUpdate(next.Key(), next, cur.Version))
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("storing migration %q: %w", cur.Name, err)
		}
		m, _ := s.vmMigrations.Get(next.Key())
		return m, nil
	}
	return nil, api.Conflict("migration %q keeps changing: try again", r.PathValue("name"))
}

// startVMMigration sets spec.start: a planned migration becomes pending,
// one still being planned or uploaded runs once planned.
func (s *Server) startVMMigration(w http.ResponseWriter, r *http.Request) {
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "migration", Name: r.PathValue("name"), Project: rq.project}
	m, err := s.updateVMMigration(r.Context(), r, func(m *api.VMMigration) error {
		if finalMigration(m.Status.State) || m.Spec.Cancel {
			return api.Conflict("migration %q has %s: it cannot start", m.Name, m.Status.State)
		}
		if !m.Spec.Start {
			m.Spec.Start = true
			m.Generation++
		}
		if m.Status.State == api.VMMigrationPlanned {
			m.Status.State = api.VMMigrationPending
		}
		return nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// cancelVMMigration stops a migration: one that is not running yet is
// cancelled at once (its uploads go with its job directory), a running
// one by the controller, which removes what it half-made.
func (s *Server) cancelVMMigration(w http.ResponseWriter, r *http.Request) {
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "migration", Name: r.PathValue("name"), Project: rq.project}
	m, err := s.updateVMMigration(r.Context(), r, func(m *api.VMMigration) error {
		if finalMigration(m.Status.State) {
			return api.Conflict("migration %q has %s: nothing to cancel", m.Name, m.Status.State)
		}
		m.Spec.Cancel = true
		m.Generation++
		if m.Status.State != api.VMMigrationRunning {
			m.Status.State = api.VMMigrationCancelled
			m.Status.FinishedAt = time.Now().UTC()
			for i := range m.Status.VMs {
				if !finalMigration(m.Status.VMs[i].State) {
					m.Status.VMs[i].State = api.VMMigrationCancelled
				}
			}
		}
		return nil
	})
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// deleteVMMigration removes a migration's record. A running one is
// cancelled by its removal: the controller sees it gone, stops the copy
// and removes what it half-made and its job directory.
func (s *Server) deleteVMMigration(w http.ResponseWriter, r *http.Request) {
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "migration", Name: r.PathValue("name"), Project: rq.project}
	m, err := s.vmMigrationOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if _, err := s.st.Txn(r.Context(), s.vmMigrations.OpDelete(m.Key(), m.Version)); err != nil {
		if errors.Is(err, store.ErrConflict) {
			err = api.Conflict("migration %q changed meanwhile: try again", m.Name)
		}
		s.writeError(w, r, fmt.Errorf("deleting migration %q: %w", m.Name, err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
