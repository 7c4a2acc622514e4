package v2v

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/images"
)

// Copier copies the disks of planned VMs into qcow2 files under Dir.
type Copier struct {
	// Dir is the job's directory: everything the copy writes is under it.
	Dir string
	// Streams opens streamed disks (nil: a plan with one is refused).
	Streams Streams
	// MaxDiskBytes bounds a disk's virtual size (default
	// DefaultMaxDiskBytes) and an OVA member's size.
	MaxDiskBytes int64
	// CheckpointBytes is how often a stream's copy is checkpointed
	// (default 64 MiB).
	CheckpointBytes int64
	// Parallel is how many disks of one VM are copied at once (default 2).
	Parallel int
	// Progress, if set, is told how each disk goes.
	Progress func(Progress)
	// VirtV2V is virt-v2v-in-place's path, run on a plan that asks for it.
	VirtV2V string
	// AfterVM, if set, is called once a VM's disks are copied or their
	// copy failed (err): a source releases what it held for the copy.
	AfterVM func(ctx context.Context, vm string, err error)
	// Logger defaults to slog.Default.
	Logger *slog.Logger
}

// DiskResult is a disk copied: the qcow2 in the job directory.
type DiskResult struct {
	Name         string `json:"name"`
	Path         string `json:"path"`
	SourceFormat string `json:"sourceFormat"`
	VirtualSize  int64  `json:"virtualSize"`
	// SHA256 is the qcow2 file's SHA-256, or, for a raw stream or a
	// streamOptimized VMDK written directly, the content digest of the
	// disk (contentDigest).
	SHA256 string `json:"sha256"`
	// Verified: read back and compared with the source.
	Verified bool `json:"verified"`
	// AdaptError says why virt-v2v-in-place could not convert the guest
	// on this disk: the VM then gets compatible devices (VMPlan.Compatible).
	AdaptError string `json:"adaptError,omitempty"`
}

func (c *Copier) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.Default().With("component", "v2v")
}

// CopyVM copies p's disks, several at once, each resuming from its
// checkpoint. A plan with blockers is refused.
func (c *Copier) CopyVM(ctx context.Context, p VMPlan) ([]DiskResult, error) {
	if len(p.Blockers) > 0 {
		return nil, fmt.Errorf("VM %s cannot move: %s", p.Name, p.Blockers[0])
	}
	dir := filepath.Join(c.Dir, p.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("making job directory: %w", err)
	}
	par := c.Parallel
	if par <= 0 {
		par = 2
	}
	res := make([]DiskResult, len(p.Disks))
	errs := make([]error, len(p.Disks))
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i, d := range p.Disks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			res[i], errs[i] = c.copyDisk(ctx, dir, p, d)
		}()
	}
	wg.Wait()
	err := errors.Join(errs...)
	if c.AfterVM != nil {
		c.AfterVM(context.WithoutCancel(ctx), p.Source.Name, err)
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// copyDisk copies one disk: stage it if it must be (a stream not
// written directly), or read it in place (a file, an OVA's member), check
// it as an image import does and convert it to qcow2, then compare the
// two.
func (c *Copier) copyDisk(ctx context.Context, dir string, p VMPlan, d DiskPlan) (DiskResult, error) {
	maxDisk := c.MaxDiskBytes
	if maxDisk <= 0 {
		maxDisk = DefaultMaxDiskBytes
	}
	ckPath := filepath.Join(dir, d.Name+".checkpoint.json")
	out := filepath.Join(dir, d.Name+".qcow2")
	ck, err := loadCheckpoint(ckPath)
	if err != nil {
		return DiskResult{}, err
	}
	save := func() error { return saveCheckpoint(ckPath, ck) }
	// src is the file converted, or member the OVA's member read in place.
	var src string
	var member *images.Member
	fail := func(err error) (DiskResult, error) {
		// Nothing staged of a disk that failed is kept, but for a
		// source that broke or a cancel: the next run resumes those.
		var again *resumable
		if d.From.Source.Kind != SourceFile && src != "" && ctx.Err() == nil && !errors.As(err, &again) {
			_ = os.Remove(src)
			_ = os.Remove(ckPath)
		}
		return DiskResult{}, fmt.Errorf("VM %s disk %s: %w", p.Name, d.From.Name, err)
	}
	if ck.Done {
		if writtenDirectly(ck.Mode) && sameFile(out, ck) || !writtenDirectly(ck.Mode) && fileMatches(ctx, out, ck.SHA256) {
			c.logger().Info("disk already copied", "vm", p.Name, "disk", d.Name)
			c.report(Progress{VM: p.Name, Disk: d.Name, Phase: PhaseDone, Done: ck.VirtualSize, Total: ck.VirtualSize})
			return DiskResult{Name: d.Name, Path: out, SourceFormat: ck.SourceFormat, VirtualSize: ck.VirtualSize, SHA256: ck.SHA256, Verified: true, AdaptError: ck.AdaptError}, nil
		}
		c.logger().Warn("copied disk no longer matches its checkpoint: copying again", "vm", p.Name, "disk", d.Name)
		ck = checkpoint{}
		_ = os.Remove(out)
	}

	switch s := d.From.Source; s.Kind {
	case SourceFile:
		src = s.Path
	case SourceOVA:
		// Read in place, through QEMU's raw driver over the package:
		// nothing of it is copied out.
		_ = os.Remove(filepath.Join(dir, d.Name+".member")) // staged by an earlier Polyvisor
		m, err := locateMember(s.Path, s.Member, maxDisk)
		if err != nil {
			return fail(err)
		}
		if s.Digest != nil {
			if err := checkMemberDigest(ctx, m, s.Member, s.Digest, newMeter(c.Progress, p.Name, d.Name, PhaseDigest, 0, m.Size)); err != nil {
				return fail(err)
			}
		}
		member = &m
	case SourceStream:
		if c.Streams == nil {
			return fail(errors.New("no source to stream the disk from"))
		}
		every := c.CheckpointBytes
		if every <= 0 {
			every = 64 << 20
		}
		if writtenDirectly(ck.Mode) || ck.Mode == "" && ck.Offset == 0 && !ck.Staged {
			// A raw disk, or a streamOptimized VMDK's grains, are
			// written into its qcow2 as it streams.
			st, err := c.Streams(ctx, p.Source.Name, d.From)
			if err != nil {
				return fail(&resumable{fmt.Errorf("opening source disk: %w", err)})
			}
			part := out + ".part"
			src = part
			err = errNotRaw
			declared := ""
			if df, ok := st.(interface{ DeclaredFormat() string }); ok {
				declared = df.DeclaredFormat()
			}
			switch {
			case ck.Mode == modeVMDK || declared == images.FormatVMDK:
				err = c.copyVMDK(ctx, p, d, st, &ck, save, every, maxDisk, part, nil)
			case declared == "" || declared == images.FormatRaw:
				// A VMDK's header seen here goes to copyVMDK.
				err = c.copyDirect(ctx, p, d, st, &ck, save, every, maxDisk, part)
			}
			if errors.Is(err, errNotStreamable) {
				c.logger().Info("stream staged", "vm", p.Name, "disk", d.Name, "reason", err)
				err = errNotRaw
			}
			if err == nil {
				return c.finishDirect(ctx, p, d, &ck, save, part, out, fail)
			}
			if !errors.Is(err, errNotRaw) {
				return fail(err)
			}
			_ = os.Remove(part)
			ck = checkpoint{Mode: modeStage}
			if err := save(); err != nil {
				return fail(err)
			}
		}
		src = filepath.Join(dir, d.Name+".stream")
		if !ck.Staged {
			st, err := c.Streams(ctx, p.Source.Name, d.From)
			if err != nil {
				return fail(&resumable{fmt.Errorf("opening source disk: %w", err)})
			}
			m := newMeter(c.Progress, p.Name, d.Name, PhaseStream, ck.Offset, st.Size())
			if err := stage(ctx, st, src, &ck, save, every, stageLimit(maxDisk, d.From.CapacityBytes), m); err != nil {
				return fail(err)
			}
		}
	default:
		return fail(fmt.Errorf("unknown disk source %q", s.Kind))
	}

	// Convert: the same checks as an image import, then qemu-img
	// convert, which skips zero and unallocated ranges.
	_ = os.Remove(out)
	total := max(d.From.CapacityBytes, 1)
	m := newMeter(c.Progress, p.Name, d.Name, PhaseConvert, 0, total)
	progress := func(pct int) { m.set(total*int64(pct)/100, pct == 100) }
	var res images.Result
	if member != nil {
		res, err = images.ImportMember(ctx, *member, out, progress, images.WithMaxVirtualBytes(maxDisk))
	} else {
		res, err = images.Import(ctx, src, out, api.ImageDisk, progress, images.WithMaxVirtualBytes(maxDisk))
	}
	if err != nil {
		return fail(err)
	}
	if d.From.CapacityBytes > 0 && res.VirtualSizeBytes > d.From.CapacityBytes+1<<20 {
		_ = os.Remove(out)
		return fail(fmt.Errorf("the image's virtual size of %d bytes is over the %d bytes its source declared: refused", res.VirtualSizeBytes, d.From.CapacityBytes))
	}
	vm := newMeter(c.Progress, p.Name, d.Name, PhaseVerify, 0, res.VirtualSizeBytes)
	vm.set(0, true)
	if member != nil {
		err = images.CompareMember(ctx, res.SourceFormat, *member, images.FormatQCOW2, out)
	} else {
		err = images.Compare(ctx, res.SourceFormat, src, images.FormatQCOW2, out)
	}
	if err != nil {
		_ = os.Remove(out)
		return fail(fmt.Errorf("verifying the copy: %w", err))
	}
	vm.set(res.VirtualSizeBytes, true)
	if p.Adaptation == AdaptVirtV2V && !ck.Adapted {
		if err := c.adapt(ctx, p, d, out); err != nil {
			if ctx.Err() != nil {
				return fail(err)
			}
			// The disk as copied is kept: the VM gets compatible devices.
			c.logger().Warn("guest not converted", "vm", p.Name, "disk", d.Name, "err", err)
			ck.AdaptError = err.Error()
		}
		ck.Adapted = true
		if res.SHA256, err = fileSHA256(ctx, out); err != nil {
			return fail(err)
		}
	}
	ck.Done, ck.SourceFormat, ck.VirtualSize, ck.SHA256 = true, res.SourceFormat, res.VirtualSizeBytes, res.SHA256
	if err := save(); err != nil {
		return fail(err)
	}
	if src != "" && src != d.From.Source.Path {
		_ = os.Remove(src) // the staged copy is no longer needed
	}
	c.report(Progress{VM: p.Name, Disk: d.Name, Phase: PhaseDone, Done: res.VirtualSizeBytes, Total: res.VirtualSizeBytes})
	c.logger().Info("disk copied", "vm", p.Name, "disk", d.Name, "format", res.SourceFormat, "virtual_size", res.VirtualSizeBytes)
	return DiskResult{Name: d.Name, Path: out, SourceFormat: res.SourceFormat, VirtualSize: res.VirtualSizeBytes, SHA256: res.SHA256, Verified: true, AdaptError: ck.AdaptError}, nil
}

// finishDirect makes a disk written directly its qcow2: adapted when
// the plan says so, and checkpointed done.
func (c *Copier) finishDirect(ctx context.Context, p VMPlan, d DiskPlan, ck *checkpoint, save func() error, part, out string, fail func(error) (DiskResult, error)) (DiskResult, error) {
	if err := os.Rename(part, out); err != nil {
		return fail(fmt.Errorf("keeping the written disk: %w", err))
	}
	sum, format := ck.StreamSHA256, images.FormatRaw
	if ck.Mode == modeVMDK {
		format = images.FormatVMDK
	}
	if p.Adaptation == "virt-v2v-in-place" && !ck.Adapted {
		if err := c.adapt(ctx, p, d, out); err != nil {
			_ = os.Remove(out)
			*ck = checkpoint{}
			_ = save()
			return fail(err)
		}
		ck.Adapted = true
		var err error
		if sum, err = fileSHA256(ctx, out); err != nil {
			return fail(err)
		}
	}
	fi, err := os.Stat(out)
	if err != nil {
		return fail(fmt.Errorf("keeping the written disk: %w", err))
	}
	ck.Done, ck.SourceFormat, ck.SHA256 = true, format, sum
	ck.QcowSize, ck.QcowModTime = fi.Size(), fi.ModTime().UnixNano()
	if err := save(); err != nil {
		return fail(err)
	}
	c.report(Progress{VM: p.Name, Disk: d.Name, Phase: PhaseDone, Done: ck.VirtualSize, Total: ck.VirtualSize})
	c.logger().Info("disk copied", "vm", p.Name, "disk", d.Name, "format", format, "virtual_size", ck.VirtualSize, "written", "directly")
	return DiskResult{Name: d.Name, Path: out, SourceFormat: format, VirtualSize: ck.VirtualSize, SHA256: sum, Verified: true}, nil
}

// writtenDirectly tells whether a streamed disk of this checkpoint mode
// is written into its qcow2 as it streams (its SHA256 is then the
// content digest, not the file's).
func writtenDirectly(mode string) bool { return mode == modeDirect || mode == modeVMDK }

// sameFile tells whether the file at path is the one the checkpoint
// saw done (size and modification time).
func sameFile(path string, ck checkpoint) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Size() == ck.QcowSize && fi.ModTime().UnixNano() == ck.QcowModTime
}

// fileMatches tells whether the file at path hashes to sum.
func fileMatches(ctx context.Context, path, sum string) bool {
	got, err := fileSHA256(ctx, path)
	return err == nil && got == sum
}

// adapt runs virt-v2v-in-place on the VM's first disk: virtio drivers
// into the guest's initramfs, VMware tools out.
func (c *Copier) adapt(ctx context.Context, p VMPlan, d DiskPlan, qcow2 string) error {
	if d.Name != "root" || c.VirtV2V == "" {
		return nil
	}
	m := newMeter(c.Progress, p.Name, d.Name, PhaseAdapt, 0, 0)
	m.set(0, true)
	return Adapt(ctx, c.VirtV2V, "qemu-img", c.Dir, qcow2, AdaptOptions{})
}

func (c *Copier) report(p Progress) {
	if c.Progress != nil {
		c.Progress(p)
	}
}

func lastLine(b []byte) string {
	s := string(b)
	for len(s) > 0 && (s[len(s)-1] == '\n' || s[len(s)-1] == '\r') {
		s = s[:len(s)-1]
	}
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '\n' {
			return s[i+1:]
		}
	}
	return s
}
