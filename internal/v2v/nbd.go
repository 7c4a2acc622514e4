package v2v

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// The NBD protocol's numbers (the NBD project's doc/proto.md), as far as
// a client that writes and reads one export needs them.
const (
	nbdMagic        = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic     = 0x49484156454f5054 // "IHAVEOPT"
	nbdRepMagic     = 0x3e889045565a9
	nbdReqMagic     = 0x25609513
	nbdSimpleMagic  = 0x67446698
	nbdFlagFixed    = 1 << 0 // server: fixed newstyle
	nbdFlagNoZeroes = 1 << 1
	nbdOptGo        = 7
	nbdRepAck       = 1
	nbdRepInfo      = 3
	nbdInfoExport   = 0
	nbdRepErrBit    = 1 << 31
	nbdCmdRead      = 0
	nbdCmdWrite     = 1
	nbdCmdDisc      = 2
	nbdCmdFlush     = 3
	nbdCmdZeroes    = 6
	// nbdMaxZeroes is the most one WRITE_ZEROES asks for (its length is
	// 32 bits).
	nbdMaxZeroes = 1 << 30
)

// nbdConn is a client of one NBD export, one request at a time.
type nbdConn struct {
	c      net.Conn
	size   int64
	handle uint64
	hdr    [28]byte
}

// dialNBD connects to the export name of the NBD server at the unix
// socket path and negotiates it (fixed newstyle, NBD_OPT_GO).
func dialNBD(ctx context.Context, path, name string) (*nbdConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to the disk's NBD export: %w", err)
	}
	n := &nbdConn{c: c}
	if err := n.handshake(name); err != nil {
		c.Close()
		return nil, fmt.Errorf("negotiating the disk's NBD export: %w", err)
	}
	return n, nil
}

func (n *nbdConn) handshake(name string) error {
	var greet [18]byte
	if _, err := io.ReadFull(n.c, greet[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint64(greet[0:]) != nbdMagic || binary.BigEndian.Uint64(greet[8:]) != nbdOptMagic {
		return errors.New("not a newstyle NBD server")
	}
	if binary.BigEndian.Uint16(greet[16:])&nbdFlagFixed == 0 {
		return errors.New("the NBD server is not fixed newstyle")
	}
	flags := uint32(nbdFlagFixed)
	noZeroes := binary.BigEndian.Uint16(greet[16:])&nbdFlagNoZeroes != 0
	if noZeroes {
		flags |= nbdFlagNoZeroes
	}
	opt := binary.BigEndian.AppendUint32(nil, flags)
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 0) // no info requests
	opt = binary.BigEndian.AppendUint64(opt, nbdOptMagic)
	opt = binary.BigEndian.AppendUint32(opt, nbdOptGo)
	opt = binary.BigEndian.AppendUint32(opt, uint32(len(data)))
	opt = append(opt, data...)
	if _, err := n.c.Write(opt); err != nil {
		return err
	}
	for {
		var rep [20]byte
		if _, err := io.ReadFull(n.c, rep[:]); err != nil {
			return err
		}
		if binary.BigEndian.Uint64(rep[0:]) != nbdRepMagic {
			return errors.New("bad option reply")
		}
		typ, length := binary.BigEndian.Uint32(rep[12:]), binary.BigEndian.Uint32(rep[16:])
		if length > 1<<16 {
			return errors.New("option reply too long")
		}
		body := make([]byte, length)
		if _, err := io.ReadFull(n.c, body); err != nil {
			return err
		}
		switch {
		case typ&nbdRepErrBit != 0:
			return fmt.Errorf("the server refused the export (%#x): %s", typ, body)
		case typ == nbdRepInfo && len(body) >= 12 && binary.BigEndian.Uint16(body) == nbdInfoExport:
			n.size = int64(binary.BigEndian.Uint64(body[2:]))
		case typ == nbdRepAck:
			if n.size <= 0 {
				return errors.New("the server did not say the export's size")
			}
			return nil
		}
	}
}

// request sends one command (with data for a write) and reads its
// simple reply (into into, for a read).
func (n *nbdConn) request(cmd uint16, off int64, length uint32, data, into []byte) error {
	n.handle++
	h := n.hdr[:]
	binary.BigEndian.PutUint32(h[0:], nbdReqMagic)
	binary.BigEndian.PutUint16(h[4:], 0)
	binary.BigEndian.PutUint16(h[6:], cmd)
	binary.BigEndian.PutUint64(h[8:], n.handle)
	binary.BigEndian.PutUint64(h[16:], uint64(off))
	binary.BigEndian.PutUint32(h[24:], length)
	bufs := net.Buffers{h}
	if data != nil {
		bufs = append(bufs, data)
	}
	if _, err := bufs.WriteTo(n.c); err != nil {
		return err
	}
	if cmd == nbdCmdDisc {
		return nil
	}
	var rep [16]byte
	if _, err := io.ReadFull(n.c, rep[:]); err != nil {
		return err
	}
	if binary.BigEndian.Uint32(rep[0:]) != nbdSimpleMagic || binary.BigEndian.Uint64(rep[8:]) != n.handle {
		return errors.New("bad NBD reply")
	}
	if e := binary.BigEndian.Uint32(rep[4:]); e != 0 {
		return fmt.Errorf("NBD error %d (%v)", e, syscall.Errno(e))
	}
	if into != nil {
		if _, err := io.ReadFull(n.c, into); err != nil {
			return err
		}
	}
	return nil
}

// WriteAt writes b at off.
func (n *nbdConn) WriteAt(b []byte, off int64) error {
	if err := n.request(nbdCmdWrite, off, uint32(len(b)), b, nil); err != nil {
		return fmt.Errorf("writing the disk at %d: %w", off, err)
	}
	return nil
}

// ReadAt fills b from off.
func (n *nbdConn) ReadAt(b []byte, off int64) error {
	if err := n.request(nbdCmdRead, off, uint32(len(b)), nil, b); err != nil {
		return fmt.Errorf("reading the disk back at %d: %w", off, err)
	}
	return nil
}

// Zero makes [off, end) read as zeros (the server may unmap it).
func (n *nbdConn) Zero(off, end int64) error {
	for off < end {
		l := min(end-off, nbdMaxZeroes)
		if err := n.request(nbdCmdZeroes, off, uint32(l), nil, nil); err != nil {
			return fmt.Errorf("zeroing the disk at %d: %w", off, err)
		}
		off += l
	}
	return nil
}

// Flush makes what was written durable.
func (n *nbdConn) Flush() error {
	if err := n.request(nbdCmdFlush, 0, 0, nil, nil); err != nil {
		return fmt.Errorf("flushing the disk: %w", err)
	}
	return nil
}

// Close ends the session.
func (n *nbdConn) Close() error {
	_ = n.request(nbdCmdDisc, 0, 0, nil, nil)
	return n.c.Close()
}

// qcow2Export is a qcow2 file opened for writing by qemu-storage-daemon
// and exported over NBD on a private unix socket. Its block layer
// detects zeros and unmaps them (detect-zeroes=unmap), so that zero
// ranges written stay unallocated.
type qcow2Export struct {
	path    string // the qcow2's
	cmd     *exec.Cmd
	dir     string
	done    chan error
	stopped bool
	stopErr error
	*nbdConn
}

// QemuStorageDaemon is the qemu-storage-daemon binary.
var QemuStorageDaemon = "qemu-storage-daemon"

// exportQCOW2 starts qemu-storage-daemon on the qcow2 at path and
// connects to it. The daemon dies with the process that started it.
func exportQCOW2(ctx context.Context, path string) (*qcow2Export, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("exporting the disk: %w", err)
	}
	// A unix socket's path is short: a directory of its own in TMPDIR.
	dir, err := os.MkdirTemp("", "pv-v2v-nbd-")
	if err != nil {
		return nil, fmt.Errorf("exporting the disk: %w", err)
	}
	sock := filepath.Join(dir, "s")
	cmd := exec.Command(QemuStorageDaemon,
		"--blockdev", "driver=file,node-name=file,filename="+commaEscape(abs),
		"--blockdev", "driver=qcow2,node-name=disk,file=file,discard=unmap,detect-zeroes=unmap",
		"--nbd-server", "addr.type=unix,addr.path="+commaEscape(sock),
		"--export", "type=nbd,id=exp,node-name=disk,name=disk,writable=on")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var out limitedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("starting qemu-storage-daemon: %w", err)
	}
	e := &qcow2Export{path: abs, cmd: cmd, dir: dir, done: make(chan error, 1)}
	go func() { e.done <- cmd.Wait() }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			if e.nbdConn, err = dialNBD(ctx, sock, "disk"); err == nil {
				return e, nil
			}
		}
		select {
		case err := <-e.done:
			os.RemoveAll(dir)
			return nil, fmt.Errorf("qemu-storage-daemon exited: %v: %s", err, lastLine(out.b))
		case <-ctx.Done():
			e.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.stop()
			return nil, fmt.Errorf("qemu-storage-daemon did not export the disk within 20s: %s", lastLine(out.b))
		}
	}
}

// stop ends the session and the daemon (which closes the qcow2
// cleanly on SIGTERM) and waits for it.
func (e *qcow2Export) stop() error {
	if e.stopped {
		return e.stopErr
	}
	e.stopped = true
	e.stopErr = e.halt()
	return e.stopErr
}

func (e *qcow2Export) halt() error {
	if e.nbdConn != nil {
		e.nbdConn.Close()
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-e.done:
	case <-time.After(30 * time.Second):
		_ = e.cmd.Process.Kill()
		err = <-e.done
	}
	os.RemoveAll(e.dir)
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && !exit.Exited()) {
		return fmt.Errorf("qemu-storage-daemon: %w", err)
	}
	return nil
}

func commaEscape(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// limitedBuffer keeps the first max bytes written to it (64 KiB when
// max is 0); over tells whether more came.
type limitedBuffer struct {
	b    []byte
	max  int
	over bool
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	limit := l.max
	if limit == 0 {
		limit = 64 << 10
	}
	room := limit - len(l.b)
	if room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	if len(p) > room {
		l.over = true
	}
	return len(p), nil
}
