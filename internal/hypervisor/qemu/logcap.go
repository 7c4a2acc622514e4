package qemu

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// A VM's directory holds two files that grow while it runs: console.log,
// where QEMU records the guest's serial output (the guest decides how
// much: `yes > /dev/ttyS0` writes as fast as the emulated UART goes), and
// qemu.log, QEMU's and passt's messages. QEMU cannot rotate a chardev's
// logfile, and both are open for appending (O_APPEND) in processes that
// outlive the agent. So, while the driver is attached to a VM, it checks
// both every logCheckEvery and, once one passes Config.LogMaxBytes,
// drops its oldest part in place, keeping the newest half:
//
//   - where the file system can (ext4, XFS), by collapsing the file's
//     first blocks (FALLOC_FL_COLLAPSE_RANGE): the file shrinks under the
//     writer, whose next append lands at the new end; nothing is lost;
//   - else (tmpfs, Btrfs) by punching a hole over them: the space is given
//     back, the file keeps its length, and readers skip the hole;
//   - else by truncating the file to nothing.
//
// A driver that re-attaches after an agent restart trims at once what
// grew while no agent watched. What grows during one check is the most a
// log can pass its bound by.

// defaultLogMaxBytes is Config.LogMaxBytes's default.
const defaultLogMaxBytes = 2 << 20

// logCheckEvery is how often an attached VM's logs are checked.
var logCheckEvery = time.Second

// cappedLogs are the logs of a VM's directory that are bounded.
var cappedLogs = []string{consoleLog, qemuLog}

// capLogs keeps v's logs within the driver's bound until v's process
// exits or the driver lets go of it.
func (d *Driver) capLogs(v *vm) {
	limit := d.cfg.LogMaxBytes
	if limit <= 0 {
		limit = defaultLogMaxBytes
	}
	t := time.NewTicker(logCheckEvery)
	defer t.Stop()
	warned := map[string]bool{}
	for {
		v.mu.Lock()
		detached := v.detached
		v.mu.Unlock()
		if detached {
			return
		}
		for _, name := range cappedLogs {
			how, err := trimLog(filepath.Join(v.dir, name), limit)
			switch {
			case errors.Is(err, os.ErrNotExist):
			case err != nil && !warned[name]:
				warned[name] = true
				d.log.Warn("bounding a vm log", "vm", v.uid, "log", name, "err", err)
			case how != "":
				d.log.Debug("trimmed a vm log", "vm", v.uid, "log", name, "how", how)
			}
		}
		select {
		case <-v.exited:
			return
		case <-t.C:
		}
	}
}

// trimLog keeps the file at path within limit bytes of disk, dropping its
// oldest bytes to keep the newest limit/2 once it holds more. how says
// what was done: "", "collapsed", "punched" or "truncated".
func trimLog(path string, limit int64) (how string, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fd := int(f.Fd())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	// What the file takes on disk: its length, but for holes an earlier
	// punch left.
	held := min(st.Size, st.Blocks*512)
	if held <= limit {
		return "", nil
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return "", fmt.Errorf("reading the file system of %s: %w", path, err)
	}
	block := max(fs.Bsize, 512)
	cut := (st.Size - limit/2) / block * block
	if cut <= 0 {
		return "", nil
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_COLLAPSE_RANGE, 0, cut); err == nil {
		return "collapsed", nil
	}
	if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, cut); err == nil {
		return "punched", nil
	}
	if err := f.Truncate(0); err != nil {
		return "", fmt.Errorf("truncating %s: %w", path, err)
	}
	return "truncated", nil
}

// readTail reads up to max bytes from the end of a file (all when max <=
// 0), from its first data past a hole trimLog punched.
func readTail(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	off := int64(0)
	if max > 0 && fi.Size() > max {
		off = fi.Size() - max
	}
	switch data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA); {
	case err == nil:
		off = data
	case errors.Is(err, unix.ENXIO):
		return nil, nil // nothing but a hole past off
	}
	// Any other error: no SEEK_DATA here; read from off.
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, err
	}
	return io.ReadAll(f)
}
