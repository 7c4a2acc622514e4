package images

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// qemuImg is the qemu-img binary run; tests point it at a recording
// wrapper.
var qemuImg = "qemu-img"

// prlimitPath is util-linux's prlimit, through which qemu-img runs with
// kernel resource limits; "" when it is not installed (then the limits
// are watched from here instead, less tightly).
var prlimitPath, _ = exec.LookPath("prlimit")

// nicePath and ionicePath (coreutils, util-linux) run qemu-img at the
// lowest CPU priority and in the idle I/O class, so that a conversion
// uses what the server's own work (the API, the store) leaves; "" when
// they are not installed.
var (
	nicePath, _   = exec.LookPath("nice")
	ionicePath, _ = exec.LookPath("ionice")
)

// convertAddressSpace bounds a conversion's virtual memory: its buffers,
// the source format's tables (a VDI's block map of a 64 TiB disk takes
// 256 MiB) and its I/O threads' stacks, with malloc's arenas kept few
// (qemuImgEnv).
const convertAddressSpace = 4 << 30

// qemuImgEnv is what qemu-img runs with beside the server's environment:
// C messages, and few malloc arenas (each reserves 64 MiB of address
// space, under RLIMIT_AS).
var qemuImgEnv = []string{"LC_ALL=C", "MALLOC_ARENA_MAX=2"}

// limits are the kernel resource limits of one qemu-img run; 0 is none.
type limits struct {
	addressSpace int64 // bytes of virtual memory (RLIMIT_AS)
	cpuSeconds   int64 // RLIMIT_CPU
	fileSize     int64 // largest file it may write (RLIMIT_FSIZE)
}

// inspectLimits bound qemu-img info and measure on an untrusted image: a
// crafted header can make them allocate or loop (the limits OpenStack
// puts on the same commands).
var inspectLimits = limits{addressSpace: 1 << 30, cpuSeconds: 30}

// inspectTimeout bounds the wall time of qemu-img info and measure.
const inspectTimeout = 2 * time.Minute

// logger is the package's sub-logger, taken from slog.Default at each
// use so that a default set later by main applies.
func logger() *slog.Logger { return slog.Default().With("component", "images") }

// imageInfo is the part of `qemu-img info --output=json` we read.
type imageInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	BackingFilename string `json:"backing-filename"`
	FormatSpecific  struct {
		Data struct {
			DataFile string `json:"data-file"`
			Extents  []struct {
				Filename string `json:"filename"`
			} `json:"extents"`
		} `json:"data"`
	} `json:"format-specific"`
}

// qemuInfo runs qemu-img info on path with an explicit format and shared
// (-U) access.
func qemuInfo(ctx context.Context, format, path string) (*imageInfo, error) {
	path, err := safePath(path)
	if err != nil {
		return nil, err
	}
	return qemuInfoOf(ctx, format, path)
}

// qemuInfoOf is qemuInfo of what qemu-img opens by name: an absolute
// path, or a member's json: name (diskSource.arg).
func qemuInfoOf(ctx context.Context, format, name string) (*imageInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, inspectTimeout)
	defer cancel()
	var stdout bytes.Buffer
	if err := runQemuImg(ctx, &stdout, inspectLimits, "info", "-f", format, "-U", "--output=json", name); err != nil {
		return nil, err
	}
	var info imageInfo
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil {
		return nil, fmt.Errorf("decoding qemu-img info: %w", err)
	}
	return &info, nil
}

// qemuMeasure returns the bytes a qcow2 converted from what qemu-img
// opens by name (of format; an absolute path or a member's json: name)
// needs at most: its data and metadata, whatever its virtual size.
func qemuMeasure(ctx context.Context, format, name string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, inspectTimeout)
	defer cancel()
	var stdout bytes.Buffer
	if err := runQemuImg(ctx, &stdout, inspectLimits, "measure", "-f", format, "-O", FormatQCOW2, "--output=json", name); err != nil {
		return 0, err
	}
	var m struct {
		Required int64 `json:"required"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &m); err != nil {
		return 0, fmt.Errorf("decoding qemu-img measure: %w", err)
	}
	if m.Required <= 0 {
		return 0, fmt.Errorf("qemu-img measure: required size %d", m.Required)
	}
	return m.Required, nil
}

// progressRE matches qemu-img -p output: "    (42.17/100%)".
var progressRE = regexp.MustCompile(`\((\d+(?:\.\d+)?)/100%\)`)

// qemuConvert converts src (of format; an absolute path, or a member's
// json: name) to a qcow2 at dst, reporting progress as a percentage 0-100. The kernel stops qemu-img from writing
// more than maxBytes (> 0); without prlimit a watcher kills it once dst
// grows past them. Either way the result is an *outputLimitError.
func qemuConvert(ctx context.Context, format, src, dst string, maxBytes int64, progress func(pct float64)) error {
	dst, err := safePath(dst)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		sc.Split(scanCRLF)
		for sc.Scan() {
			m := progressRE.FindSubmatch(sc.Bytes())
			if m == nil {
				continue
			}
			if pct, err := strconv.ParseFloat(string(m[1]), 64); err == nil {
				progress(pct)
			}
		}
		_, _ = io.Copy(io.Discard, pr) // an overlong line: keep qemu-img unblocked
	}()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if maxBytes > 0 && prlimitPath == "" {
		go watchSize(ctx, cancel, dst, maxBytes)
	}
	err = runQemuImg(ctx, pw, limits{fileSize: maxBytes, addressSpace: convertAddressSpace}, "convert", "-p", "-U", "-f", format, "-O", FormatQCOW2, src, dst)
	_ = pw.Close()
	<-done
	if maxBytes > 0 {
		var q *qemuImgError
		switch {
		case err == nil && fileBytes(dst) > maxBytes:
			// Written between two looks of the watcher.
			return &outputLimitError{max: maxBytes, err: fmt.Errorf("%d bytes written", fileBytes(dst))}
		case err == nil:
		case errors.Is(context.Cause(ctx), errOutputLimit) || errors.As(err, &q) && strings.Contains(q.Stderr, "File too large"):
			return &outputLimitError{max: maxBytes, err: err}
		}
	}
	return err
}

// errOutputLimit is the cause of a conversion the watcher stopped.
var errOutputLimit = errors.New("output over its limit")

// outputLimitError is a conversion stopped because its output reached
// its limit.
type outputLimitError struct {
	max int64
	err error
}

func (e *outputLimitError) Error() string {
	return fmt.Sprintf("the converted image grew past %d bytes: %v", e.max, e.err)
}

func (e *outputLimitError) Unwrap() error { return e.err }

// watchSize cancels ctx with errOutputLimit when the file at path holds
// more than max bytes, allocated or apparent.
func watchSize(ctx context.Context, cancel context.CancelCauseFunc, path string, max int64) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if fileBytes(path) > max {
				cancel(errOutputLimit)
				return
			}
		}
	}
}

// safePath makes path absolute. QEMU reads a file name that starts with
// "json:" or "proto:" as options or a protocol; one that starts with "/"
// is always a plain file.
func safePath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", path, err)
	}
	return abs, nil
}

// scanCRLF splits on \r or \n: qemu-img redraws its progress with \r.
func scanCRLF(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// qemuImgError is a failed qemu-img run; Stderr is its message.
type qemuImgError struct {
	Args   []string
	Stderr string
	Err    error
}

func (e *qemuImgError) Error() string {
	msg := e.Stderr
	if msg == "" {
		msg = e.Err.Error()
	}
	return fmt.Sprintf("qemu-img %s: %s", e.Args[0], msg)
}

func (e *qemuImgError) Unwrap() error { return e.Err }

// runQemuImg runs qemu-img with args under lim, writing its stdout to
// stdout. The process is killed when ctx ends.
//
// qemu-img runs as the server's user (root, to read and write the image
// store): what confines it is the kernel's resource limits (prlimit:
// memory, CPU time, output size, no core dump), the lowest CPU and I/O
// priority (nice, ionice), a wall-clock timeout, and never probing a
// format nor following a file name of the image (see the package
// documentation). Each wrapper execs the next in the same process.
func runQemuImg(ctx context.Context, stdout io.Writer, lim limits, args ...string) error {
	stderr := &capped{max: 16 << 10}
	argv := append([]string{qemuImg}, args...)
	if ionicePath != "" {
		argv = append([]string{ionicePath, "-c", "3", "-t"}, argv...) // idle class; -t: go on where it is refused
	}
	if nicePath != "" {
		argv = append([]string{nicePath, "-n", "19"}, argv...)
	}
	if prlimitPath != "" {
		// No core dump of a qemu-img the kernel stops, ever.
		pl := []string{prlimitPath, "--core=0"}
		for _, l := range []struct {
			flag string
			v    int64
		}{{"--as", lim.addressSpace}, {"--cpu", lim.cpuSeconds}, {"--fsize", lim.fileSize}} {
			if l.v > 0 {
				pl = append(pl, fmt.Sprintf("%s=%d", l.flag, l.v))
			}
		}
		argv = append(append(pl, "--"), argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.Env = append(os.Environ(), qemuImgEnv...)
	cmd.WaitDelay = 5 * time.Second
	logger().Debug("running qemu-img", "args", args)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			if cause := context.Cause(ctx); cause != ctx.Err() {
				return fmt.Errorf("qemu-img %s: %w (%w)", args[0], ctx.Err(), cause)
			}
			return fmt.Errorf("qemu-img %s: %w", args[0], ctx.Err())
		}
		return &qemuImgError{Args: args, Stderr: strings.TrimSpace(stderr.String()), Err: err}
	}
	return nil
}

// capped is a buffer that keeps only its first max bytes.
type capped struct {
	bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}
