package v2v

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/atomicfile"
)

// Runner carries out a plan: it records the migration in the project,
// copies each VM's disks (Copier), imports them as the project's images,
// creates the VM on its host and waits for it to run, several VMs at once
// (a wave), reporting to the record and stopping when it is cancelled.
type Runner struct {
	Client *client.Client
	Copier *Copier
	// Name names the migration's record; a record of that name not yet
	// ended is taken over (a run that resumes).
	Name string
	// Parallel is how many VMs move at once (default 2).
	Parallel int
	// ReportEvery is how often the record is told how the run goes
	// (default 2 s).
	ReportEvery time.Duration
	// Runner names where the run happens in the record.
	Runner string
	// Events, if set, is told each VM's progress as it is reported.
	Events func(api.VMMigrationVMStatus)
}

// Run runs the plan's VMs that have no blockers. It returns the record as
// last reported and an error when a VM failed or the run was cancelled.
func (r *Runner) Run(ctx context.Context, plan Plan) (*api.VMMigration, error) {
	if plan.Version != PlanVersion {
		return nil, fmt.Errorf("plan version %d: want %d (make it again with 'polyvisor migration plan')", plan.Version, PlanVersion)
	}
	var vms []VMPlan
	for _, p := range plan.VMs {
		if len(p.Blockers) == 0 {
			vms = append(vms, p)
		}
	}
	if len(vms) == 0 {
		return nil, errors.New("no VM of the plan can move: see its blockers")
	}
	par := r.Parallel
	if par <= 0 {
		par = 2
	}
	rec, err := r.record(ctx, plan, vms, par)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	st := &runState{status: api.VMMigrationStatus{State: api.VMMigrationRunning, Runner: r.Runner}}
	for _, p := range vms {
		st.status.VMs = append(st.status.VMs, api.VMMigrationVMStatus{Name: p.Name, State: api.VMMigrationPending})
	}
	errCancelled := errors.New("migration cancelled")
	// A record that refuses reports (it ended, was deleted, or is not
	// this user's to report to) or has ended stops the run: nobody would
	// learn how it goes, nor could cancel it.
	var (
		stopMu  sync.Mutex
		stopped error
	)
	report := func() error {
		m, err := r.Client.ReportVMMigration(context.WithoutCancel(ctx), rec.Name, st.snapshot())
		if err != nil {
			r.Copier.logger().Warn("reporting the migration", "migration", rec.Name, "err", err)
			if client.IsConflict(err) || client.IsNotFound(err) || client.ErrorCode(err) == api.CodeForbidden {
				stopMu.Lock()
				if stopped == nil {
					stopped = fmt.Errorf("the migration's record refuses reports, stopping: %w", err)
				}
				stopMu.Unlock()
				cancel(errCancelled)
			}
			return err
		}
		rec = m
		if m.Spec.Cancel || finalMigration(m.Status.State) && m.Status.State != st.snapshot().State {
			cancel(errCancelled)
		}
		return nil
	}
	_ = report()
	every := r.ReportEvery
	if every <= 0 {
		every = 2 * time.Second
	}
	stopReports := make(chan struct{})
	reportsDone := make(chan struct{})
	go func() {
		defer close(reportsDone)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stopReports:
				return
			case <-t.C:
				if report() != nil && ctx.Err() != nil {
					return
				}
			}
		}
	}()

	copier := *r.Copier
	copier.Progress = func(p Progress) {
		st.set(p.VM, func(v *api.VMMigrationVMStatus) {
			v.Phase, v.Disk, v.DoneBytes, v.TotalBytes, v.Rate, v.ETASeconds, v.ResumedBytes =
				p.Phase, p.Disk, p.Done, p.Total, p.Rate, p.ETA.Seconds(), p.Resumed
			if v.Phase == PhaseDone {
				v.Phase = ""
			}
		}, r.Events)
		if r.Copier.Progress != nil {
			r.Copier.Progress(p)
		}
	}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for _, p := range vms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
			}
			defer func() {
				select {
				case <-sem:
				default:
				}
			}()
			if ctx.Err() != nil {
				st.set(p.Name, func(v *api.VMMigrationVMStatus) { v.State = api.VMMigrationCancelled }, r.Events)
				return
			}
			st.set(p.Name, func(v *api.VMMigrationVMStatus) { v.State = api.VMMigrationRunning }, r.Events)
			err := r.moveVM(ctx, &copier, p, st)
			st.set(p.Name, func(v *api.VMMigrationVMStatus) {
				switch {
				case err == nil:
					v.State, v.Phase = api.VMMigrationSucceeded, PhaseDone
				case errors.Is(context.Cause(ctx), errCancelled):
					v.State, v.Error = api.VMMigrationCancelled, "cancelled; what was copied is kept for a later run"
				default:
					v.State, v.Error = api.VMMigrationFailed, cutError(err.Error())
				}
			}, r.Events)
		}()
	}
	wg.Wait()
	close(stopReports)
	<-reportsDone

	final := api.VMMigrationSucceeded
	var failed []string
	for _, v := range st.snapshot().VMs {
		switch v.State {
		case api.VMMigrationFailed:
			final = api.VMMigrationFailed
			failed = append(failed, v.Name+": "+v.Error)
		case api.VMMigrationCancelled:
			if final == api.VMMigrationSucceeded {
				final = api.VMMigrationCancelled
			}
		}
	}
	st.mu.Lock()
	st.status.State = final
	if len(failed) > 0 {
		st.status.Error = cutError(fmt.Sprintf("%d VM(s) failed: %s", len(failed), failed[0]))
	}
	st.mu.Unlock()
	stopMu.Lock()
	why := stopped
	stopMu.Unlock()
	if why != nil {
		return rec, why
	}
	if err := report(); err != nil {
		return rec, fmt.Errorf("reporting the migration's end (%s): %w", final, err)
	}
	switch final {
	case api.VMMigrationFailed:
		return rec, errors.New(st.snapshot().Error)
	case api.VMMigrationCancelled:
		return rec, errCancelled
	}
	return rec, nil
}

// record takes over the migration's record, or makes it.
func (r *Runner) record(ctx context.Context, plan Plan, vms []VMPlan, par int) (*api.VMMigration, error) {
	if m, err := r.Client.GetVMMigration(ctx, r.Name); err == nil {
		if m.Status.State != api.VMMigrationPending && m.Status.State != api.VMMigrationRunning {
			return nil, fmt.Errorf("migration %q has %s: run the plan under another --name (what was copied is kept and resumes)", r.Name, m.Status.State)
		}
		if len(m.Spec.VMs) != len(vms) {
			return nil, fmt.Errorf("migration %q records %d VMs, the plan moves %d: run it under another --name", r.Name, len(m.Spec.VMs), len(vms))
		}
		return m, nil
	} else if !client.IsNotFound(err) {
		return nil, err
	}
	req := api.VMMigrationCreate{Name: r.Name, Source: plan.Source, Host: plan.Host, Parallel: par}
	for _, p := range vms {
		req.VMs = append(req.VMs, api.VMMigrationVM{Name: p.Name, SourceName: p.Source.Name, VCPUs: p.VCPUs,
			MemoryMiB: p.MemoryMiB, Disks: len(p.Disks), CopyBytes: p.CopyBytes})
	}
	return r.Client.CreateVMMigration(ctx, req)
}

// moveVM copies one VM's disks, imports them and creates the VM. A disk
// already imported (its image exists with the copy's SHA-256) and a VM
// already created are kept: a run that resumes goes on from there.
func (r *Runner) moveVM(ctx context.Context, copier *Copier, p VMPlan, st *runState) error {
	disks, err := copier.CopyVM(ctx, p)
	if err != nil {
		return err
	}
	for i, d := range disks {
		image := p.Disks[i].Image
		// The image this disk became in an earlier run, if any: the
		// server converts an upload again, so its digest is not the
		// copy's; its UID, recorded beside the copy, says.
		record := filepath.Join(copier.Dir, p.Name, d.Name+".image.json")
		if img, err := r.Client.GetImage(ctx, image); err == nil {
			var was imageRecord
			if b, rerr := os.ReadFile(record); rerr == nil && json.Unmarshal(b, &was) == nil &&
				was.UID == img.UID && was.CopySHA256 == d.SHA256 && img.State == api.ImageReady {
				continue
			}
			return fmt.Errorf("image %q already exists and is not this disk's copy: delete it or rename the VM", image)
		} else if !client.IsNotFound(err) {
			return err
		}
		f, err := os.Open(d.Path)
		if err != nil {
			return fmt.Errorf("opening copied disk: %w", err)
		}
		fi, _ := f.Stat()
		total := fi.Size()
		start := time.Now()
		op, err := r.Client.UploadImage(ctx, image, api.ImageDisk, f, total, func(sent int64) {
			rate, eta := rateETA(sent, total-sent, time.Since(start))
			st.set(p.Name, func(v *api.VMMigrationVMStatus) {
				v.Phase, v.Disk, v.DoneBytes, v.TotalBytes, v.Rate, v.ETASeconds, v.ResumedBytes = "upload", d.Name, sent, total, rate, eta.Seconds(), 0
			}, nil)
		})
		f.Close()
		if err != nil {
			return err
		}
		if err := r.waitOp(ctx, op); err != nil {
			return fmt.Errorf("importing disk %s as image %q: %w", d.Name, image, err)
		}
		if b, err := json.Marshal(imageRecord{UID: op.Target.UID, CopySHA256: d.SHA256}); err == nil {
			if err := atomicfile.Write(record, b, 0o600); err != nil {
				return fmt.Errorf("recording image %q: %w", image, err)
			}
		}
	}
	st.set(p.Name, func(v *api.VMMigrationVMStatus) {
		v.Phase, v.Disk, v.DoneBytes, v.TotalBytes, v.Rate, v.ETASeconds, v.ResumedBytes = "create", "", 0, 0, 0, 0, 0
	}, r.Events)
	if vm, err := r.Client.GetVM(ctx, p.Name); err == nil {
		if vm.Labels["polyvisor.io/migrated-from"] == "" {
			return fmt.Errorf("VM %q already exists and was not made by a migration: rename the VM in the plan", p.Name)
		}
		return nil
	} else if !client.IsNotFound(err) {
		return err
	}
	op, err := r.Client.CreateVM(ctx, p.Create(), client.CreateOptions{})
	if err != nil {
		return err
	}
	if err := r.waitOp(ctx, op); err != nil {
		return fmt.Errorf("creating VM %s: %w", p.Name, err)
	}
	return nil
}

func (r *Runner) waitOp(ctx context.Context, op *api.Operation) error {
	final, err := r.Client.WaitOperation(ctx, op.ID, nil)
	if err != nil {
		return err
	}
	return client.OperationError(final)
}

// imageRecord is the image a copied disk became.
type imageRecord struct {
	UID        string `json:"uid"`
	CopySHA256 string `json:"copySHA256"`
}

// runState is the run's status, shared by the VMs' goroutines.
type runState struct {
	mu     sync.Mutex
	status api.VMMigrationStatus
}

func (s *runState) set(vm string, change func(*api.VMMigrationVMStatus), events func(api.VMMigrationVMStatus)) {
	s.mu.Lock()
	var out api.VMMigrationVMStatus
	for i := range s.status.VMs {
		if s.status.VMs[i].Name == vm {
			change(&s.status.VMs[i])
			out = s.status.VMs[i]
		}
	}
	s.mu.Unlock()
	if events != nil {
		events(out)
	}
}

func (s *runState) snapshot() api.VMMigrationStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.status
	out.VMs = append([]api.VMMigrationVMStatus(nil), s.status.VMs...)
	return out
}

// finalMigration tells whether a migration's state is final.
func finalMigration(state string) bool {
	return state == api.VMMigrationSucceeded || state == api.VMMigrationFailed || state == api.VMMigrationCancelled
}

// cutError cuts an error to what a migration record takes, on a UTF-8
// boundary, saying it was cut.
func cutError(s string) string {
	if len(s) <= api.MaxMigrationErrorBytes {
		return s
	}
	const more = " [...]"
	n := api.MaxMigrationErrorBytes - len(more)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + more
}
