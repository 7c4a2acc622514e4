package v2vrun

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
	"github.com/polyvisor/polyvisor/internal/atomicfile"
	"github.com/polyvisor/polyvisor/internal/v2v"
)

// Labels of the VMs a migration makes.
const (
	LabelMigratedFrom = "polyvisor.io/migrated-from"
	LabelMigration    = "polyvisor.io/migration"
)

// ImportRetry is how long an import waits for one of its project's
// import slots.
var ImportRetry = time.Second

// BootTimeout bounds the wait for a created VM to run.
var BootTimeout = 5 * time.Minute

// run carries out a started migration: its VMs in waves of
// Spec.Parallel, each copied (resuming from its checkpoints), imported,
// created and booted, then its source dealt with. A cancel or delete
// stops it and removes what it half-made; the end of the server's term
// stops it and leaves everything for the next leader.
func (c *Controller) run(ctx context.Context, recs Records, m *api.VMMigration) {
	key, uid := m.Key(), m.UID
	st := newRunState(m)
	src, plans, err := c.readPlan(ctx, m)
	if err == nil {
		defer src.Close()
	}
	if ctx.Err() != nil {
		if c.undo(ctx) {
			c.cleanup(m, st)
			c.finish(ctx, recs, m, st, nil)
		}
		return
	}
	if err == nil && len(plans) != len(m.Status.VMs) && len(m.Status.VMs) > 0 {
		err = fmt.Errorf("the source now holds %d VMs, the plan %d: make the migration again", len(plans), len(m.Status.VMs))
	}
	if err != nil {
		c.finish(ctx, recs, m, st, fmt.Errorf("reading the source: %w", err))
		return
	}
	st.plan(plans)
	if m.Status.StartedAt.IsZero() {
		c.cfg.Audit(ctx, "migration.run", ref(m), "", api.AuditSuccess, fmt.Sprintf("%d VM(s), %d at once", len(plans), m.Spec.Parallel))
	}
	if _, err := recs.Update(ctx, key, uid, func(r *api.VMMigration) {
		if final(r.Status.State) {
			return // cancelled as it started: the tick stops this run
		}
		r.Status = st.status(api.VMMigrationRunning, c.cfg.Server, r.Status)
		if r.Status.StartedAt.IsZero() {
			r.Status.StartedAt = time.Now().UTC()
		}
	}); err != nil {
		c.log.Warn("recording a migration's start", "migration", key, "err", err)
		return
	}

	reportsDone := make(chan struct{})
	stopReports := make(chan struct{})
	go func() {
		defer close(reportsDone)
		t := time.NewTicker(c.cfg.ReportEvery)
		defer t.Stop()
		for {
			select {
			case <-stopReports:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				_, err := recs.Update(ctx, key, uid, func(r *api.VMMigration) {
					if !final(r.Status.State) {
						r.Status = st.status(api.VMMigrationRunning, c.cfg.Server, r.Status)
					}
				})
				if err != nil && !errors.Is(err, errGone) {
					c.log.Warn("recording a migration's progress", "migration", key, "err", err)
				}
			}
		}
	}()

	par := max(m.Spec.Parallel, 1)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i, pl := range plans {
		if st.vm(i).State == api.VMMigrationSucceeded {
			continue // moved before the server restarted
		}
		if len(pl.plan.Blockers) > 0 {
			st.set(i, func(v *api.VMMigrationVMStatus) {
				v.State, v.Error = api.VMMigrationFailed, cut("not moved: "+pl.plan.Blockers[0])
			})
			continue
		}
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				return
			}
			if ctx.Err() != nil {
				return
			}
			st.set(i, func(v *api.VMMigrationVMStatus) { v.State, v.Error = api.VMMigrationRunning, "" })
			err := c.moveVM(ctx, m, src, pl, i, st)
			st.set(i, func(v *api.VMMigrationVMStatus) {
				switch {
				case err == nil:
					v.State, v.Phase = api.VMMigrationSucceeded, v2v.PhaseDone
					v.DoneBytes, v.TotalBytes, v.Rate, v.ETASeconds = 0, 0, 0, 0
				case ctx.Err() != nil:
				default:
					v.State, v.Error = api.VMMigrationFailed, cut(err.Error())
				}
			})
			if err != nil && ctx.Err() == nil {
				c.log.Warn("moving a VM", "migration", key, "vm", pl.plan.Name, "err", err)
			}
		})
	}
	wg.Wait()
	close(stopReports)
	<-reportsDone
	if ctx.Err() != nil {
		if !c.undo(ctx) {
			return // the term ended: the next leader resumes
		}
		c.cleanup(m, st)
	}
	c.finish(ctx, recs, m, st, nil)
}

// undo tells whether a stopped run is to undo what it half-made: it was
// cancelled or deleted, not ended with the server's term.
func (c *Controller) undo(ctx context.Context) bool {
	cause := context.Cause(ctx)
	return errors.Is(cause, errCancelled) || errors.Is(cause, errDeleted)
}

// finish writes the migration's end, audits it and removes its job
// directory (its copies, checkpoints and uploads).
func (c *Controller) finish(ctx context.Context, recs Records, m *api.VMMigration, st *runState, cause error) {
	state, msg := api.VMMigrationSucceeded, ""
	switch {
	case c.undo(ctx):
		state, msg = api.VMMigrationCancelled, "cancelled: what it half-made was removed"
		st.cancelUnfinished()
	case cause != nil:
		state, msg = api.VMMigrationFailed, cause.Error()
	default:
		var failed []string
		for _, v := range st.snapshot() {
			if v.State == api.VMMigrationFailed {
				failed = append(failed, v.Name+": "+v.Error)
			}
		}
		if len(failed) > 0 {
			state, msg = api.VMMigrationFailed, fmt.Sprintf("%d VM(s) failed: %s", len(failed), failed[0])
		}
	}
	if !errors.Is(context.Cause(ctx), errDeleted) {
		_, err := recs.Update(context.WithoutCancel(ctx), m.Key(), m.UID, func(r *api.VMMigration) {
			r.Status = st.status(state, c.cfg.Server, r.Status)
			r.Status.Error, r.Status.FinishedAt = cut(msg), time.Now().UTC()
		})
		if err != nil {
			c.log.Warn("recording a migration's end", "migration", m.Key(), "err", err)
		}
	}
	outcome := api.AuditSuccess
	if state != api.VMMigrationSucceeded {
		outcome = api.AuditFailure
	}
	c.cfg.Audit(context.WithoutCancel(ctx), "migration."+state, ref(m), "", outcome, msg)
	if err := os.RemoveAll(c.jobDir(m.UID)); err != nil {
		c.log.Warn("removing a migration's job directory", "migration", m.Key(), "err", err)
	}
}

// moveVM copies one VM's disks, imports them, creates and boots the VM,
// then does with the source what the migration says. Each step is kept
// once done, so that a run that resumes goes on from there.
func (c *Controller) moveVM(ctx context.Context, m *api.VMMigration, src Source, pl planned, i int, st *runState) error {
	p := pl.plan
	dir := c.jobDir(m.UID)
	copier := &v2v.Copier{Dir: filepath.Join(dir, "copy"), Streams: src.Streams(), CheckpointBytes: c.cfg.CheckpointBytes,
		VirtV2V: c.cfg.VirtV2V, AfterVM: src.AfterVM, Logger: c.log,
		Progress: func(pr v2v.Progress) {
			st.set(i, func(v *api.VMMigrationVMStatus) {
				v.Phase, v.Disk, v.DoneBytes, v.TotalBytes, v.Rate, v.ETASeconds, v.ResumedBytes =
					pr.Phase, pr.Disk, pr.Done, pr.Total, pr.Rate, pr.ETA.Seconds(), pr.Resumed
			})
		}}
	if pl.cutover {
		if err := c.cutover(ctx, src, copier, pl, i, st); err != nil {
			return err
		}
	}
	disks, err := copier.CopyVM(ctx, p)
	if err != nil {
		return err
	}
	for d, disk := range disks {
		if err := c.importDisk(ctx, m, p, d, disk, i, st); err != nil {
			return err
		}
	}
	st.phase(i, "create", "")
	vm, err := c.cfg.Target.VM(ctx, m.Project, p.Name)
	if err != nil {
		return err
	}
	if vm == nil {
		for _, d := range disks {
			if d.AdaptError != "" {
				p = p.Compatible("virt-v2v-in-place could not convert it: " + d.AdaptError)
				st.note(i, "guest not converted (virt-v2v-in-place failed): SATA disks and e1000 NICs")
			}
		}
		create := p.Create()
		create.Labels[LabelMigration] = m.UID
		st.made(i, func(md *made) { md.vm = true })
		if err := c.cfg.Target.CreateVM(ctx, m.Project, create); err != nil {
			return fmt.Errorf("creating VM %s: %w", p.Name, err)
		}
	} else if vm.Labels[LabelMigration] != m.UID {
		return fmt.Errorf("VM %q already exists and was not made by this migration: name the VM otherwise", p.Name)
	} else {
		st.made(i, func(md *made) { md.vm = true })
	}
	st.phase(i, "boot", "")
	host, err := c.waitRunning(ctx, m.Project, p.Name)
	if err != nil {
		return err
	}
	st.set(i, func(v *api.VMMigrationVMStatus) { v.Host = host })
	return c.dispose(ctx, m, src, pl, i, st)
}

// cutover copies a running vSphere VM from its migration snapshot while
// it runs (warm), then powers it off; the copy that follows reads it
// again, powered off. Without changed-block tracking (vcsim has none,
// and Polyvisor does not use it yet where there is) that second copy is
// whole: it is said in the VM's notes.
func (c *Controller) cutover(ctx context.Context, src Source, copier *v2v.Copier, pl planned, i int, st *runState) error {
	warm := *copier
	warm.Dir = filepath.Join(filepath.Dir(copier.Dir), "warm")
	if _, err := warm.CopyVM(ctx, pl.plan); err != nil {
		return fmt.Errorf("copying the running source: %w", err)
	}
	st.phase(i, "cutover", "")
	if ok, why := src.ChangeTracking(ctx, pl.src.HW.Name); !ok {
		st.note(i, "no changed-block tracking ("+why+"): the disks are copied again, cold, after the source was powered off")
	} else {
		st.note(i, "changed-block tracking is on, but Polyvisor does not read changed areas yet: the disks are copied again, cold, after the source was powered off")
	}
	if err := src.PowerOff(ctx, pl.src.ID); err != nil {
		return fmt.Errorf("powering the source off at cutover: %w", err)
	}
	st.note(i, "source powered off at cutover")
	if err := os.RemoveAll(warm.Dir); err != nil {
		c.log.Warn("removing the warm copy", "err", err)
	}
	return nil
}

// importDisk makes a copied disk the project's image, unless an earlier
// run did (its UID recorded beside the copy).
func (c *Controller) importDisk(ctx context.Context, m *api.VMMigration, p v2v.VMPlan, d int, disk v2v.DiskResult, i int, st *runState) error {
	image := p.Disks[d].Image
	record := filepath.Join(c.jobDir(m.UID), "copy", p.Name, disk.Name+".image.json")
	img, err := c.cfg.Target.Image(ctx, m.Project, image)
	if err != nil {
		return err
	}
	if img != nil {
		var was imageRecord
		if b, rerr := os.ReadFile(record); rerr == nil && json.Unmarshal(b, &was) == nil &&
			was.UID == img.UID && was.CopySHA256 == disk.SHA256 && img.State == api.ImageReady {
			st.made(i, func(md *made) { md.images = append(md.images, image) })
			return nil
		}
		return fmt.Errorf("image %q already exists and is not this disk's copy: delete it or name the VM otherwise", image)
	}
	st.made(i, func(md *made) { md.images = append(md.images, image) })
	var uidOf string
	for {
		start := time.Now()
		uidOf, err = c.cfg.Target.ImportImage(ctx, m.Project, image, disk.Path, func(sent, total int64) {
			rate, eta := rateETA(sent, total-sent, time.Since(start))
			st.set(i, func(v *api.VMMigrationVMStatus) {
				v.Phase, v.Disk, v.DoneBytes, v.TotalBytes, v.Rate, v.ETASeconds, v.ResumedBytes = "import", disk.Name, sent, total, rate, eta, 0
			})
		})
		if !errors.Is(err, ErrImportsBusy) {
			break
		}
		// The project's import slots are taken (by this migration's
		// other VMs, or its users): wait for one.
		st.phase(i, "import", disk.Name)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(ImportRetry):
		}
	}
	if err != nil {
		return err
	}
	b, _ := json.Marshal(imageRecord{UID: uidOf, CopySHA256: disk.SHA256})
	if err := atomicfile.Write(record, b, 0o600); err != nil {
		return fmt.Errorf("recording image %q: %w", image, err)
	}
	return nil
}

// imageRecord is the image a copied disk became.
type imageRecord struct {
	UID        string `json:"uid"`
	CopySHA256 string `json:"copySHA256"`
}

// waitRunning waits for the VM to run; it returns its host.
func (c *Controller) waitRunning(ctx context.Context, project, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, BootTimeout)
	defer cancel()
	for {
		vm, err := c.cfg.Target.VM(ctx, project, name)
		if err != nil {
			return "", err
		}
		if vm == nil {
			return "", fmt.Errorf("VM %s is gone", name)
		}
		if vm.Status.PowerState == api.PowerRunning {
			return vm.Spec.Host, nil
		}
		if vm.Status.Error != nil {
			return "", fmt.Errorf("VM %s does not run: %s", name, vm.Status.Error.Message)
		}
		select {
		case <-ctx.Done():
			if context.Cause(ctx) == context.DeadlineExceeded {
				return "", fmt.Errorf("VM %s did not run within %s", name, BootTimeout)
			}
			return "", ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// dispose keeps, powers off or deletes the source VM once its copy runs.
func (c *Controller) dispose(ctx context.Context, m *api.VMMigration, src Source, pl planned, i int, st *runState) error {
	d := m.Spec.SourceDisposition
	if d == "" || d == api.DispositionKeep || pl.src.ID == "" {
		return nil
	}
	st.phase(i, "disposition", "")
	err := src.PowerOff(ctx, pl.src.ID)
	if err == nil && d == api.DispositionDelete {
		err = src.Delete(ctx, pl.src.ID)
	}
	outcome, msg := api.AuditSuccess, fmt.Sprintf("source VM %s (%s) %s after VM %s ran", pl.src.HW.Name, pl.src.ID, map[string]string{
		api.DispositionPowerOff: "powered off", api.DispositionDelete: "deleted"}[d], pl.plan.Name)
	if err != nil {
		outcome, msg = api.AuditFailure, msg+": "+err.Error()
	}
	c.cfg.Audit(context.WithoutCancel(ctx), "migration.source."+d, ref(m), "", outcome, msg)
	if err != nil {
		return fmt.Errorf("source disposition %s: %w", d, err)
	}
	st.note(i, map[string]string{api.DispositionPowerOff: "source powered off", api.DispositionDelete: "source deleted"}[d])
	return nil
}

// cleanup removes what the run half-made: the VM and images of every VM
// that did not finish, as the record's plans name them (a run that never
// started here knows them from there). It outlives the run's context,
// cancelled by then.
func (c *Controller) cleanup(m *api.VMMigration, st *runState) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, v := range st.snapshot() {
		if v.State == api.VMMigrationSucceeded || v.Plan == nil {
			continue
		}
		md := st.madeOf(i)
		if vm, err := c.cfg.Target.VM(ctx, m.Project, v.Name); err == nil && vm != nil && vm.Labels[LabelMigration] == m.UID {
			md.vm = true
		}
		if md.vm {
			if err := c.cfg.Target.DeleteVM(ctx, m.Project, v.Name); err != nil {
				c.log.Warn("removing a half-made VM", "migration", m.Key(), "vm", v.Name, "err", err)
			}
		}
		for _, d := range v.Plan.Disks {
			rec := filepath.Join(c.jobDir(m.UID), "copy", v.Name, d.Name+".image.json")
			if _, err := os.Stat(rec); err == nil {
				md.images = append(md.images, d.Image)
			}
		}
		seen := map[string]bool{}
		for _, img := range md.images {
			if seen[img] {
				continue
			}
			seen[img] = true
			if err := c.cfg.Target.DeleteImage(ctx, m.Project, img); err != nil {
				c.log.Warn("removing a half-made image", "migration", m.Key(), "image", img, "err", err)
			}
		}
	}
}

// rateETA is the rate of moved bytes over elapsed and the time left for
// left bytes at it (seconds).
func rateETA(moved, left int64, elapsed time.Duration) (float64, float64) {
	if elapsed <= 0 || moved <= 0 {
		return 0, 0
	}
	rate := float64(moved) / elapsed.Seconds()
	return rate, float64(left) / rate
}

// cut cuts an error to what a migration record takes, on a UTF-8
// boundary, saying it was cut.
func cut(s string) string {
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
