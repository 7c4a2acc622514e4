package server

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/diskspace"
)

// MigrationDir is where migrations keep their job directories (uploads,
// fetched packages, copies and checkpoints), one per migration by UID.
func MigrationDir(dataDir string) string { return filepath.Join(dataDir, "migrations") }

// MigrationFilesDir is where a migration's uploaded files are.
func MigrationFilesDir(dataDir, uid string) string {
	return filepath.Join(MigrationDir(dataDir), uid, "files")
}

// migrationUploads keeps one upload of each migration file at a time.
var migrationUploads sync.Map

// uploadVMMigrationFile receives one file of an upload source into the
// migration's job directory. Only the leading server takes it: its
// migration controller runs the migration where the file is. The size is
// checked before a byte is read (Content-Length must be the declared
// size, and the disk must keep its reserve); the body is cut there.
func (s *Server) uploadVMMigrationFile(w http.ResponseWriter, r *http.Request) {
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "migration", Name: r.PathValue("name"), Project: rq.project}
	file := r.PathValue("file")
	m, err := s.vmMigrationOf(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.admitMigrationFile(r, m, file); err != nil {
		s.writeError(w, r, err)
		return
	}
	lock := m.UID + "/" + file
	if _, busy := migrationUploads.LoadOrStore(lock, true); busy {
		s.writeError(w, r, api.Conflict("file %q of migration %q is being uploaded", file, m.Name))
		return
	}
	defer migrationUploads.Delete(lock)
	dir := MigrationFilesDir(s.cfg.DataDir, m.UID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.writeError(w, r, fmt.Errorf("making the migration's directory: %w", err))
		return
	}
	dst := filepath.Join(dir, file)
	part := dst + ".part"
	f, err := os.OpenFile(part, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		s.writeError(w, r, fmt.Errorf("receiving file %q: %w", file, err))
		return
	}
	n, err := io.Copy(f, http.MaxBytesReader(w, r.Body, r.ContentLength))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && n != r.ContentLength {
		err = api.Invalid("body", "ended after %d of %d bytes", n, r.ContentLength)
	}
	if err == nil {
		err = os.Rename(part, dst)
	}
	if err != nil {
		os.Remove(part)
		s.writeError(w, r, fmt.Errorf("receiving file %q: %w", file, err))
		return
	}
	m, err = s.updateVMMigration(r.Context(), r, func(m *api.VMMigration) error {
		if m.Status.State != api.VMMigrationUploading {
			return api.Conflict("migration %q is %s: it takes no file", m.Name, m.Status.State)
		}
		all := true
		for i := range m.Spec.Source.Files {
			if m.Spec.Source.Files[i].Name == file {
				m.Spec.Source.Files[i].Uploaded = true
			}
			all = all && m.Spec.Source.Files[i].Uploaded
		}
		if all {
			m.Status.State = api.VMMigrationPlanning
			m.Status.Server = s.ctl.Self().Name
		}
		return nil
	})
	if err != nil {
		os.Remove(dst)
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

// admitMigrationFile says whether this server takes the file now.
func (s *Server) admitMigrationFile(r *http.Request, m *api.VMMigration, file string) error {
	if m.Status.State != api.VMMigrationUploading {
		return api.Conflict("migration %q is %s: it takes no file", m.Name, m.Status.State)
	}
	var want *api.VMMigrationFile
	for i, f := range m.Spec.Source.Files {
		if f.Name == file {
			want = &m.Spec.Source.Files[i]
		}
	}
	if want == nil {
		return &api.Error{Code: api.CodeNotFound, Field: "file", Message: fmt.Sprintf("migration %q lists no file %q", m.Name, file)}
	}
	if want.Uploaded {
		return api.Conflict("file %q of migration %q is already uploaded", file, m.Name)
	}
	if r.ContentLength != want.SizeBytes {
		return &api.Error{Code: api.CodeUnprocessable, Field: "Content-Length",
			Message: fmt.Sprintf("file %q is declared %d bytes, the upload is %d (-1: unknown)", file, want.SizeBytes, r.ContentLength)}
	}
	if term, ok, err := s.ctl.Leader(r.Context()); err != nil {
		return &api.Error{Code: api.CodeUnavailable, Message: "the store cannot say who leads: " + err.Error()}
	} else if !ok || !s.ctl.Holds(term) {
		at := "no server leads now"
		if ok {
			at = fmt.Sprintf("upload it to %s (%s)", term.Name, term.URL)
		}
		return api.Conflict("this server does not run migrations, the leading one does: %s", at)
	}
	u, err := diskspace.Stat(s.cfg.DataDir)
	if err != nil {
		return err
	}
	if uint64(want.SizeBytes)+uint64(s.cfg.MinFreeBytes) > u.Free {
		return &api.Error{Code: api.CodeUnprocessable, Field: "sizeBytes",
			Message: fmt.Sprintf("file %q (%d bytes) does not fit on the server's disk (%d bytes free, %d kept free)", file, want.SizeBytes, u.Free, s.cfg.MinFreeBytes)}
	}
	return nil
}
