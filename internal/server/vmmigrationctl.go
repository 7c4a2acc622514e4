package server

import (
	"context"
	"os/exec"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/imports"
	"github.com/polyvisor/polyvisor/internal/controller/v2vrun"
	"github.com/polyvisor/polyvisor/internal/images"
	"github.com/polyvisor/polyvisor/internal/provider"
	"github.com/polyvisor/polyvisor/internal/store"
)

// newMigrationController wires the controller that plans and runs VM
// migrations on the leading server: it reads providers through
// connections of its own with their bindings' credentials, keeps its job
// directories under the data dir, and makes images and VMs through this
// server's API as "system:migration".
func (s *Server) newMigrationController() *v2vrun.Controller {
	virtV2V, _ := exec.LookPath("virt-v2v-in-place")
	return v2vrun.New(v2vrun.Config{
		Migrations: s.vmMigrations,
		Dir:        MigrationDir(s.cfg.DataDir),
		Server:     s.ctl.Self().Name,
		Sources: &v2vrun.Sources{
			Provider:    func(ctx context.Context, name string) (provider.Provider, error) { return s.ctl.Estate.Open(ctx, name) },
			FetchPolicy: func() images.FetchPolicy { return imports.FetchPolicy(s.imageSettings()) },
		},
		Target:          v2vrun.ClientTarget{Client: func(project string) *client.Client { return s.selfClient("migration", project) }},
		Audit:           s.auditMigration,
		Logger:          s.log,
		VirtV2V:         virtV2V,
		CheckpointBytes: s.cfg.MigrationCheckpointBytes,
	})
}

// leadMigrations runs the migration controller for one term.
func (s *Server) leadMigrations(ctx context.Context, w store.Writer) { s.v2v.Lead(ctx, w) }

// auditMigration records what the migration controller did, as the
// system.
func (s *Server) auditMigration(ctx context.Context, action string, target api.Ref, opID, outcome, msg string) {
	s.appendAudit(ctx, &api.AuditRecord{
		Actor: api.AuditActor{Kind: auth.KindSystem, Name: "migration"}, Action: action, Project: target.Project,
		Resource: target, OperationID: opID, Outcome: outcome, Message: msg,
	})
}
