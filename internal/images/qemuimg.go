package images

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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
	var stdout bytes.Buffer
	if err := runQemuImg(ctx, &stdout, "info", "-f", format, "-U", "--output=json", path); err != nil {
		return nil, err
	}
	var info imageInfo
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil {
		return nil, fmt.Errorf("decoding qemu-img info: %w", err)
	}
	return &info, nil
}

// progressRE matches qemu-img -p output: "    (42.17/100%)".
var progressRE = regexp.MustCompile(`\((\d+(?:\.\d+)?)/100%\)`)

// qemuConvert converts src (of format) to a qcow2 at dst, reporting
// progress as a percentage 0-100.
func qemuConvert(ctx context.Context, format, src, dst string, progress func(pct float64)) error {
	src, err := safePath(src)
	if err != nil {
		return err
	}
	if dst, err = safePath(dst); err != nil {
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
	err = runQemuImg(ctx, pw, "convert", "-p", "-U", "-f", format, "-O", FormatQCOW2, src, dst)
	_ = pw.Close()
	<-done
	return err
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

// runQemuImg runs qemu-img with args, writing its stdout to stdout. The
// process is killed when ctx ends.
func runQemuImg(ctx context.Context, stdout io.Writer, args ...string) error {
	stderr := &capped{max: 16 << 10}
	cmd := exec.CommandContext(ctx, qemuImg, args...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	cmd.WaitDelay = 5 * time.Second
	logger().Debug("running qemu-img", "args", args)
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
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
