package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// Result describes an imported image.
type Result struct {
	// SourceFormat is the detected format of the source: qcow2, raw,
	// vmdk, vpc, vhdx or vdi for disks; raw for kernels and initrds.
	SourceFormat string
	// Format is the stored format: qcow2 for disks, raw otherwise.
	Format string
	// SizeBytes is the size of the stored file.
	SizeBytes int64
	// VirtualSizeBytes is the disk size the guest sees (disks only).
	VirtualSizeBytes int64
	// SHA256 is the lowercase hex digest of the stored file.
	SHA256 string
}

// Share of the progress given to each step of a disk import; the rest is
// the final hash and sync.
const convertShare = 90

// ImportOption configures Import.
type ImportOption func(*importConfig)

type importConfig struct {
	maxVirtualBytes int64
	maxStoredBytes  int64
	convertTimeout  time.Duration
}

// WithMaxVirtualBytes refuses disks whose virtual size is over n bytes
// (n <= 0: no limit, the default), before anything is converted. A small
// qcow2 can declare a huge disk.
func WithMaxVirtualBytes(n int64) ImportOption {
	return func(c *importConfig) { c.maxVirtualBytes = n }
}

// WithMaxStoredBytes refuses images whose stored file would be over n
// bytes (n <= 0: no limit beyond the image's own measure): a disk whose
// measure says so before it is converted, and a conversion that grows
// past n is stopped. A few MiB of compressed qcow2 can expand to
// gigabytes.
func WithMaxStoredBytes(n int64) ImportOption {
	return func(c *importConfig) { c.maxStoredBytes = n }
}

// WithConvertTimeout stops a disk conversion that runs longer than d
// (d <= 0: no limit, the default).
func WithConvertTimeout(d time.Duration) ImportOption {
	return func(c *importConfig) { c.convertTimeout = d }
}

// storedMargin is what a conversion may write beyond qemu-img's measure
// of it: the measure is an upper bound already; the margin keeps a
// rounding of it from failing an import.
func storedMargin(measured int64) int64 { return measured/64 + 1<<20 }

// Import stores the image at src, a local file, as dst, for an image of
// kind api.ImageDisk (or ""), api.ImageKernel or api.ImageInitrd.
//
// A disk is checked (see the package documentation), then converted to
// qcow2 with qemu-img. A kernel or initrd is copied byte for byte. The
// result is written to a temporary file next to dst, synced, and linked to
// dst, which must not exist; on any failure nothing is left at dst or in
// temporary files. progress, if not nil, is called with increasing
// percentages and last with 100 on success.
//
// Problems with the image itself are *RejectError.
func Import(ctx context.Context, src, dst, kind string, progress func(pct int), opts ...ImportOption) (Result, error) {
	var cfg importConfig
	for _, o := range opts {
		o(&cfg)
	}
	p := newReporter(progress)
	absSrc, err := filepath.Abs(src)
	if err != nil {
		return Result{}, fmt.Errorf("importing image: %w", err)
	}
	absDst, err := newDestination(dst)
	if err != nil {
		return Result{}, err
	}

	var res Result
	switch kind {
	case api.ImageDisk, "":
		res, err = importDisk(ctx, diskSource{path: absSrc}, absDst, cfg, p)
	case api.ImageKernel, api.ImageInitrd:
		res, err = importVerbatim(ctx, absSrc, absDst, cfg, p)
	default:
		return Result{}, rejectf("unknown image kind %q: want %s, %s or %s", kind, api.ImageDisk, api.ImageKernel, api.ImageInitrd)
	}
	if err != nil {
		return Result{}, err
	}
	p.set(100)
	logger().Info("imported image", "dst", absDst, "kind", kind, "source_format", res.SourceFormat,
		"size", res.SizeBytes, "virtual_size", res.VirtualSizeBytes)
	return res, nil
}

// newDestination is dst made absolute; it must not exist.
func newDestination(dst string) (string, error) {
	abs, err := filepath.Abs(dst)
	if err != nil {
		return "", fmt.Errorf("importing image: %w", err)
	}
	if _, err := os.Lstat(abs); err == nil {
		return "", fmt.Errorf("importing image: destination %s already exists", abs)
	}
	return abs, nil
}

func importDisk(ctx context.Context, src diskSource, dst string, cfg importConfig, p *reporter) (Result, error) {
	in, err := inspectDisk(ctx, src, cfg)
	if err != nil {
		return Result{}, err
	}
	format := in.Format
	limit := in.MaxSizeBytes
	if cfg.maxStoredBytes > 0 {
		limit = min(limit, cfg.maxStoredBytes)
	}

	var res Result
	err = withTemp(dst, false, func(tmp string) error {
		cctx, cancel := ctx, context.CancelFunc(func() {})
		if cfg.convertTimeout > 0 {
			cctx, cancel = context.WithTimeout(ctx, cfg.convertTimeout)
		}
		err := qemuConvert(cctx, format, src.arg(format), tmp, limit, func(pct float64) {
			p.set(int(pct * convertShare / 100))
		})
		cancel()
		var over *outputLimitError
		switch {
		case err == nil:
		case errors.As(err, &over):
			return &RejectError{Msg: fmt.Sprintf("image expands to more than %d bytes when converted: refused", limit), Err: err}
		case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			return &RejectError{Msg: fmt.Sprintf("converting the image took longer than the limit of %s: refused", cfg.convertTimeout), Err: err}
		default:
			return fmt.Errorf("converting image from %s: %w", format, err)
		}
		out, err := qemuInfo(ctx, FormatQCOW2, tmp)
		if err != nil {
			return fmt.Errorf("inspecting converted image: %w", err)
		}
		if out.BackingFilename != "" || out.FormatSpecific.Data.DataFile != "" {
			return errors.New("inspecting converted image: it references another file")
		}
		sum, size, err := hashAndSync(ctx, tmp, func(done, total int64) {
			p.set(convertShare + int(done*(99-convertShare)/max(total, 1)))
		})
		if err != nil {
			return err
		}
		res = Result{
			SourceFormat:     format,
			Format:           FormatQCOW2,
			SizeBytes:        size,
			VirtualSizeBytes: out.VirtualSize,
			SHA256:           sum,
		}
		return nil
	})
	return res, err
}

// checkInfo is the second line of defence: what qemu-img reports about an
// image detect accepted must agree that it stands alone.
func checkInfo(format, src string, info *imageInfo) error {
	abs, err := safePath(src)
	if err != nil {
		return err
	}
	return checkInfoOf(format, func(name string) bool { return name == abs }, info)
}

// checkInfoOf is checkInfo of an image whose own file (a vmdk's one
// extent) own tells from others by the name qemu-img reports.
func checkInfoOf(format string, own func(name string) bool, info *imageInfo) error {
	if info.Format != format {
		return rejectf("image detected as %s but qemu-img reads it as %s: refused", format, info.Format)
	}
	if info.BackingFilename != "" {
		return rejectf("image names a backing file %q: refused", info.BackingFilename)
	}
	if f := info.FormatSpecific.Data.DataFile; f != "" {
		return rejectf("image names an external data file %q: refused", f)
	}
	if format == FormatVMDK {
		ext := info.FormatSpecific.Data.Extents
		if len(ext) != 1 || !own(ext[0].Filename) {
			return rejectf("image is a vmdk with %d extent files: refused; upload a single-file vmdk", len(ext))
		}
	}
	if info.VirtualSize <= 0 {
		return rejectf("image has a virtual size of %d bytes", info.VirtualSize)
	}
	return nil
}

func importVerbatim(ctx context.Context, src, dst string, cfg importConfig, p *reporter) (Result, error) {
	in, err := os.Open(src)
	if err != nil {
		return Result{}, fmt.Errorf("opening image: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return Result{}, fmt.Errorf("opening image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Result{}, fmt.Errorf("opening image: %s is not a regular file", src)
	}
	if fi.Size() == 0 {
		return Result{}, rejectf("image is empty")
	}
	if cfg.maxStoredBytes > 0 && fi.Size() > cfg.maxStoredBytes {
		return Result{}, rejectf("image is %d bytes, over the limit of %d", fi.Size(), cfg.maxStoredBytes)
	}
	var res Result
	err = withTemp(dst, false, func(tmp string) error {
		sum, n, err := copyToFile(ctx, tmp, in, fi.Size(), func(done, total int64) {
			p.set(int(done * 99 / max(total, 1)))
		})
		if err != nil {
			return fmt.Errorf("copying image: %w", err)
		}
		res = Result{SourceFormat: FormatRaw, Format: FormatRaw, SizeBytes: n, SHA256: sum}
		return nil
	})
	return res, err
}

// asReject turns a qemu-img failure to read the user's image into a
// *RejectError that quotes qemu-img without the server's path (the last
// argument of the run): qemu-img ran and failed, by an error or a signal
// (a crafted image can crash it or make it pass its resource limits).
// Cancellations and failures to run qemu-img at all stay as they are.
func asReject(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	var q *qemuImgError
	var exit *exec.ExitError
	if !errors.As(err, &q) || q.Stderr == "" && !errors.As(q.Err, &exit) {
		return fmt.Errorf("%s: %w", msg, err)
	}
	detail := strings.TrimPrefix(q.Stderr, "qemu-img: ")
	if detail == "" {
		detail = "qemu-img " + exit.String()
	}
	if path := q.Args[len(q.Args)-1]; path != "" {
		detail = strings.ReplaceAll(detail, "'"+path+"'", "the image")
		detail = strings.ReplaceAll(detail, path, "the image")
	}
	return &RejectError{Msg: msg + ": " + detail, Err: err}
}

// reporter calls a progress callback with strictly increasing values.
type reporter struct {
	fn   func(int)
	last int
}

func newReporter(fn func(int)) *reporter { return &reporter{fn: fn, last: -1} }

func (r *reporter) set(pct int) {
	pct = min(max(pct, 0), 100)
	if r.fn == nil || pct <= r.last {
		return
	}
	r.last = pct
	r.fn(pct)
}
