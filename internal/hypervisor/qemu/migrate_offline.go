package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// A stopped VM moves to another host with its own disks copied by QEMU's
// tools over the agents' channels: the source serves each disk read-only
// with qemu-nbd on a private unix socket, the channel carries that NBD
// session to the target, where qemu-img convert reads it and writes the
// disk's content into the overlay Create made there (every block: zeros
// where the disk reads zero, so nothing of the target's image shows
// through where the source's disk differs from it). A disk on shared
// storage is not copied. No QEMU runs the VM meanwhile.

var _ hypervisor.DiskMover = (*Driver)(nil)

// nbdStartTimeout bounds the wait for qemu-nbd's socket.
const nbdStartTimeout = 10 * time.Second

// SendDisks serves each of the stopped VM's own disks to the target.
func (d *Driver) SendDisks(ctx context.Context, h *hypervisor.Handle, dial hypervisor.MigrationDialer) error {
	if err := checkHandle(h); err != nil {
		return err
	}
	if processAlive(h.PID, h.PIDStart) {
		return fmt.Errorf("sending the disks of vm %s: it runs (pid %d): only a stopped vm's disks are copied", h.UID, h.PID)
	}
	for _, df := range hypervisor.MovedDisks(h) {
		if err := d.sendDisk(ctx, df, dial); err != nil {
			return fmt.Errorf("sending disk %s of vm %s: %w", df.Name, h.UID, err)
		}
	}
	d.log.Info("vm's disks sent", "vm", h.UID, "disks", len(hypervisor.MovedDisks(h)))
	return nil
}

func (d *Driver) qemuNBD() string {
	if p := filepath.Join(filepath.Dir(d.cfg.QEMUImgBinary), "qemu-nbd"); filepath.IsAbs(p) {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "qemu-nbd"
}

func (d *Driver) sendDisk(ctx context.Context, df hypervisor.DiskFile, dial hypervisor.MigrationDialer) error {
	dir, err := os.MkdirTemp("", "pv-nbd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	// Without --persistent, qemu-nbd ends once its one client leaves.
	cmd := exec.Command(d.qemuNBD(), "--read-only", "--format=qcow2", "--shared=1",
		"--export-name="+df.Name, "--socket="+sock, df.Path)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting qemu-nbd: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	// The first connection is the client's: a probe would end the server.
	var local net.Conn
	deadline := time.Now().Add(nbdStartTimeout)
	for {
		local, err = net.Dial("unix", sock)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("qemu-nbd did not listen: %w: %s", err, strings.TrimSpace(out.String()))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-exited:
			exited <- err
			return fmt.Errorf("qemu-nbd ended: %v: %s", err, strings.TrimSpace(out.String()))
		case <-time.After(10 * time.Millisecond):
		}
	}
	far, err := dial(ctx, hypervisor.ChannelDisk(df.Name))
	if err != nil {
		local.Close()
		return fmt.Errorf("connecting its channel: %w", err)
	}
	done := make(chan struct{})
	go func() {
		splice(local, far)
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		local.Close()
		far.Close()
		<-done
		return ctx.Err()
	}
	return nil
}

// ReceiveDisk writes the disk the channel carries into the VM's disk of
// that name, and returns once qemu-img has written all of it.
func (d *Driver) ReceiveDisk(ctx context.Context, h *hypervisor.Handle, channel string, conn net.Conn) error {
	defer conn.Close()
	name, ok := hypervisor.DiskOfChannel(channel)
	if !ok {
		return fmt.Errorf("receiving vm %s: channel %q carries no disk", h.UID, channel)
	}
	var df *hypervisor.DiskFile
	for _, m := range hypervisor.MovedDisks(h) {
		if m.Name == name {
			df = &m
		}
	}
	if df == nil {
		return fmt.Errorf("receiving disk %q of vm %s: no such disk to copy", name, h.UID)
	}
	dir, err := os.MkdirTemp("", "pv-nbd-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("receiving disk %s of vm %s: %w", name, h.UID, err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		ln.Close()
		if err != nil {
			conn.Close()
			return
		}
		splice(c, conn)
	}()
	start := time.Now()
	out, err := exec.CommandContext(ctx, d.cfg.QEMUImgBinary, "convert", "-n", "-f", "raw", "-O", "qcow2",
		"nbd+unix:///"+name+"?socket="+sock, df.Path).CombinedOutput()
	if err != nil {
		if ctx.Err() != nil {
			err = errors.Join(ctx.Err(), err)
		}
		return fmt.Errorf("receiving disk %s of vm %s: qemu-img convert: %w: %s", name, h.UID, err, strings.TrimSpace(string(out)))
	}
	d.log.Info("disk received", "vm", h.UID, "disk", name, "took", time.Since(start).Round(time.Millisecond))
	return nil
}
