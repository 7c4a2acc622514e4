package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
	"github.com/polyvisor/polyvisor/internal/qmp"
)

// An nbd pool's volume files live on its serving host (the pool's first
// host), in the pool's path like a dir pool's. That host's agent runs one
// qemu-storage-daemon for the pool, listening on the pool's address, and
// exports each volume that is made (export name: the volume's uid) with
// its qcow2 opened by the daemon, so the export carries the guest's
// blocks. QEMU on any host of the pool opens an export with its own nbd
// driver over a connection its agent made (qemu/volumes.go).
//
// One daemon per pool rather than per volume: one process and one
// listening port for the pool, and exports come and go over its QMP
// socket. The daemon runs detached (--daemonize), so it outlives the
// agent like the VMs' QEMUs do; a restarted agent finds it by its socket,
// and every pool report adds back an export the daemon lacks (after a
// reboot, say).
//
// While a volume is exported the daemon holds its file's lock, which
// qemu-img's changes need: the export is taken down while the agent works
// on a detached volume (grow, snapshot, delete) and put back after. An
// attached volume is never taken down.

// nbdServing tells whether this host serves the nbd pool.
func (vs *volumes) nbdServing(p *api.Pool) bool {
	return p != nil && p.Spec.Kind == api.PoolNBD && len(p.Spec.Hosts) > 0 && p.Spec.Hosts[0] == vs.a.cfg.Host
}

func nbdDir(p *api.Pool) string { return filepath.Join(p.Spec.Path, ".nbd") }

// nbdDaemon connects to the pool's daemon, starting it when none answers.
func (vs *volumes) nbdDaemon(ctx context.Context, p *api.Pool) (*qmp.Client, error) {
	dir := nbdDir(p)
	sock := filepath.Join(dir, "qsd.sock")
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	c, err := qmp.Dial(dctx, sock)
	cancel()
	if err == nil {
		return c, nil
	}
	ap, err := netip.ParseAddrPort(p.Spec.Address)
	if err != nil {
		return nil, fmt.Errorf("nbd pool %s: address %q: %w", p.Name, p.Spec.Address, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("making the nbd daemon's directory: %w", err)
	}
	os.Remove(sock)
	logf, err := os.OpenFile(filepath.Join(dir, "qsd.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the nbd daemon's log: %w", err)
	}
	defer logf.Close()
	// --daemonize returns once the daemon listens; the daemon itself
	// runs on in a session of its own, never tied to ctx.
	cmd := exec.Command("qemu-storage-daemon",
		"--chardev", "socket,id=pvmon,path="+sock+",server=on,wait=off",
		"--monitor", "chardev=pvmon",
		"--nbd-server", fmt.Sprintf("addr.type=inet,addr.host=%s,addr.port=%d", ap.Addr(), ap.Port()),
		"--pidfile", filepath.Join(dir, "qsd.pid"),
		"--daemonize")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("starting the nbd daemon of pool %s: %w: %s", p.Name, err, tailFile(filepath.Join(dir, "qsd.log")))
	}
	vs.log.Info("nbd daemon started", "pool", p.Name, "address", ap.String())
	dctx, cancel = context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c, err = qmp.Dial(dctx, sock)
	if err != nil {
		return nil, fmt.Errorf("connecting to the nbd daemon of pool %s: %w", p.Name, err)
	}
	return c, nil
}

func tailFile(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 1024 {
		b = b[len(b)-1024:]
	}
	return strings.TrimSpace(string(b))
}

// exportNode is the daemon's node and export id of the export name.
func exportNode(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "pv" + hex.EncodeToString(sum[:12])
}

func exportName(v *api.Volume) (string, error) {
	_, name, err := hypervisor.ParseNBDExport(v.Spec.Export)
	return name, err
}

func exported(ctx context.Context, c *qmp.Client, node string) (bool, error) {
	var exps []struct {
		ID string `json:"id"`
	}
	if err := c.Execute(ctx, "query-block-exports", nil, &exps); err != nil {
		return false, fmt.Errorf("listing exports: %w", err)
	}
	for _, e := range exps {
		if e.ID == node {
			return true, nil
		}
	}
	return false, nil
}

// exportDaemon connects to the daemon of the volume's pool and names the
// volume's export and its node there.
func (vs *volumes) exportDaemon(ctx context.Context, p *api.Pool, v *api.Volume) (c *qmp.Client, name, node string, err error) {
	if name, err = exportName(v); err != nil {
		return nil, "", "", err
	}
	if c, err = vs.nbdDaemon(ctx, p); err != nil {
		return nil, "", "", err
	}
	return c, name, exportNode(name), nil
}

// export serves the volume's file as its export, if it is not already.
func (vs *volumes) export(ctx context.Context, p *api.Pool, v *api.Volume) error {
	c, name, node, err := vs.exportDaemon(ctx, p, v)
	if err != nil {
		return err
	}
	defer c.Close()
	if ok, err := exported(ctx, c, node); err != nil || ok {
		return err
	}
	err = c.Execute(ctx, "blockdev-add", map[string]any{
		"driver": "qcow2", "node-name": node, "discard": "unmap",
		"file": map[string]any{"driver": "file", "filename": v.Spec.Path},
	}, nil)
	var qe *qmp.Error
	if err != nil && !(errors.As(err, &qe) && strings.Contains(qe.Desc, "Duplicate")) {
		return fmt.Errorf("exporting volume %s: opening its file: %w", v.Name, err)
	}
	if err := c.Execute(ctx, "block-export-add", map[string]any{
		"type": "nbd", "id": node, "node-name": node, "name": name, "writable": true,
	}, nil); err != nil {
		return fmt.Errorf("exporting volume %s: %w", v.Name, err)
	}
	vs.log.Info("volume exported", "volume", v.Key(), "export", v.Spec.Export)
	return nil
}

// unexport takes the volume's export down and closes its file.
func (vs *volumes) unexport(ctx context.Context, p *api.Pool, v *api.Volume) error {
	c, _, node, err := vs.exportDaemon(ctx, p, v)
	if err != nil {
		return err
	}
	defer c.Close()
	ok, err := exported(ctx, c, node)
	if err != nil {
		return err
	}
	if ok {
		if err := c.Execute(ctx, "block-export-del", map[string]any{"id": node}, nil); err != nil {
			return fmt.Errorf("taking down the export of volume %s: %w", v.Name, err)
		}
		// The export goes once its last client has let go.
		deadline := time.Now().Add(10 * time.Second)
		for {
			if ok, err = exported(ctx, c, node); err != nil || !ok {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("taking down the export of volume %s: a client still holds it", v.Name)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err != nil {
			return err
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		err := c.Execute(ctx, "blockdev-del", map[string]any{"node-name": node}, nil)
		var qe *qmp.Error
		if err == nil || (errors.As(err, &qe) && strings.Contains(qe.Desc, "Failed to find node")) {
			return nil
		}
		if !errors.As(err, &qe) || !strings.Contains(qe.Desc, "in use") || time.Now().After(deadline) {
			return fmt.Errorf("closing volume %s in the nbd daemon: %w", v.Name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncExports exports every made volume of the pool the daemon lacks.
func (vs *volumes) syncExports(ctx context.Context, p *api.Pool) error {
	vs.mu.Lock()
	var made []*api.Volume
	for k, v := range vs.latest {
		if v.Spec.Pool == p.Name && v.Spec.Deletion == nil && vs.done[k] == v.Generation {
			made = append(made, v)
		}
	}
	vs.mu.Unlock()
	var errs []error
	for _, v := range made {
		errs = append(errs, vs.export(ctx, p, v))
	}
	return errors.Join(errs...)
}

// stopNBD ends the daemon of a pool that is gone.
func (vs *volumes) stopNBD(ctx context.Context, p *api.Pool) {
	sock := filepath.Join(nbdDir(p), "qsd.sock")
	dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := qmp.Dial(dctx, sock)
	if err != nil {
		return
	}
	defer c.Close()
	_ = c.Execute(dctx, "quit", nil, nil)
	vs.log.Info("nbd daemon stopped", "pool", p.Name)
}

// NBD's fixed newstyle negotiation, as much as listing exports needs.
const (
	nbdOptMagic   = 0x49484156454F5054 // "IHAVEOPT"
	nbdReplyMagic = 0x3e889045565a9
	nbdOptAbort   = 2
	nbdOptList    = 3
	nbdRepAck     = 1
	nbdRepServer  = 2
)

// nbdExported tells whether the server of the export URI serves it: it
// asks for the server's list of exports (NBD_OPT_LIST).
func nbdExported(ctx context.Context, uri string) (bool, error) {
	addr, name, err := hypervisor.ParseNBDExport(uri)
	if err != nil {
		return false, err
	}
	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(dctx, "tcp", addr.String())
	if err != nil {
		return false, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	defer conn.Close()
	deadline, _ := dctx.Deadline()
	_ = conn.SetDeadline(deadline)
	names, err := nbdList(conn)
	if err != nil {
		return false, fmt.Errorf("listing the exports of %s: %w", addr, err)
	}
	for _, n := range names {
		if n == name {
			return true, nil
		}
	}
	return false, nil
}

// nbdList negotiates on conn and returns the names of its exports.
func nbdList(conn io.ReadWriter) ([]string, error) {
	var hello struct {
		Magic, Opt uint64
		Flags      uint16
	}
	if err := binary.Read(conn, binary.BigEndian, &hello); err != nil {
		return nil, err
	}
	if hello.Magic != 0x4e42444d41474943 || hello.Opt != nbdOptMagic || hello.Flags&1 == 0 {
		return nil, errors.New("not an nbd server speaking fixed newstyle")
	}
	var out bytes.Buffer
	_ = binary.Write(&out, binary.BigEndian, uint32(3)) // fixed newstyle, no zeroes
	_ = binary.Write(&out, binary.BigEndian, struct {
		Magic    uint64
		Opt, Len uint32
	}{nbdOptMagic, nbdOptList, 0})
	if _, err := conn.Write(out.Bytes()); err != nil {
		return nil, err
	}
	var names []string
	for {
		var rep struct {
			Magic     uint64
			Opt, Type uint32
			Len       uint32
		}
		if err := binary.Read(conn, binary.BigEndian, &rep); err != nil {
			return nil, err
		}
		if rep.Magic != nbdReplyMagic || rep.Len > 1<<16 {
			return nil, errors.New("bad option reply")
		}
		data := make([]byte, rep.Len)
		if _, err := io.ReadFull(conn, data); err != nil {
			return nil, err
		}
		switch {
		case rep.Type == nbdRepAck:
			out.Reset()
			_ = binary.Write(&out, binary.BigEndian, struct {
				Magic    uint64
				Opt, Len uint32
			}{nbdOptMagic, nbdOptAbort, 0})
			_, _ = conn.Write(out.Bytes())
			return names, nil
		case rep.Type == nbdRepServer && len(data) >= 4:
			n := binary.BigEndian.Uint32(data)
			if int(n) > len(data)-4 {
				return nil, errors.New("bad export name in reply")
			}
			names = append(names, string(data[4:4+n]))
		case rep.Type&(1<<31) != 0:
			return nil, fmt.Errorf("server refused the list: error %#x %q", rep.Type, data)
		}
	}
}
