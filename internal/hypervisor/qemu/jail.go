package qemu

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// DefaultUser is the unprivileged user QEMU and passt run as when the
// agent runs as root. The driver makes it (a system user with no home and
// no shell) when it does not exist.
const DefaultUser = "polyvisor-qemu"

// emptyDirName is the directory in the state dir QEMU chroots into. It
// cannot be a VM's directory: UIDs start with a letter or digit.
const emptyDirName = ".empty"

// confinement is how the driver confines its VMs' processes on this host.
// It is decided once, at the first start or Info, and reported in the
// host's status with what could not be done here.
type confinement struct {
	jail     Jail     // how QEMU confines itself
	uid, gid int      // of jail.User, when set
	passt    string   // the passt binary; "" when it is not installed
	loopback bool     // the host's loopback is closed to jail.User (nftables)
	cgroups  *cgroups // nil when VMs get no cgroup
	notes    []string // what is not confined here, and why
}

// lazyConfinement decides a driver's confinement on first use.
type lazyConfinement struct {
	once sync.Once
	c    *confinement
}

// confinement returns the driver's confinement, deciding it on first use.
func (d *Driver) confinement() *confinement {
	d.conf.once.Do(func() {
		d.conf.c = d.decideConfinement()
		c := d.conf.c
		d.log.Info("vm confinement decided", "user", c.jail.User, "sandbox", c.jail.Sandbox,
			"chroot", c.jail.Chroot, "cgroups", c.cgroups.version(), "passt", c.passt != "", "loopbackClosed", c.loopback)
		for _, n := range c.notes {
			d.log.Warn("vm confinement: " + n)
		}
	})
	return d.conf.c
}

func (d *Driver) decideConfinement() *confinement {
	c := &confinement{}
	note := func(format string, args ...any) { c.notes = append(c.notes, fmt.Sprintf(format, args...)) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	help, err := exec.CommandContext(ctx, d.cfg.QEMUBinary, "-help").Output()
	if err != nil {
		note("QEMU runs unconfined: reading its options: %v", err)
		return c
	}
	opts := parseQEMUHelp(string(help))
	c.jail.Sandbox = opts.sandbox
	if !opts.sandbox {
		note("QEMU has no seccomp sandbox (-sandbox): it is built without seccomp")
	}
	root := os.Geteuid() == 0
	if root {
		c.jail.User, c.uid, c.gid = d.qemuUser(opts, note)
	} else {
		note("the agent does not run as root: QEMU and passt run as its user, with no cgroups and no firewall rule")
	}
	if c.jail.User != "" {
		switch dir, err := ensureEmptyDir(filepath.Join(d.cfg.StateDir, emptyDirName)); {
		case err != nil:
			note("QEMU does not chroot: %v", err)
		case opts.runWithChroot || opts.chroot:
			c.jail.Chroot = dir
		default:
			note("QEMU does not chroot: it has neither -chroot nor -run-with chroot=")
		}
		c.jail.RunWithUser, c.jail.RunWithChroot = opts.runWithUser, opts.runWithChroot
	}
	c.passt = d.cfg.PasstBinary
	if c.passt == "" {
		c.passt = "passt"
	}
	if p, err := exec.LookPath(c.passt); err != nil {
		note("user-mode NICs cannot start: passt is not installed (apt-get install passt)")
		c.passt = ""
	} else {
		c.passt = p
	}
	switch {
	case c.jail.User == "":
		note("the host's loopback is not closed to guests' user-mode NICs: it needs QEMU and passt under a user of their own")
	default:
		if err := closeLoopback(uint32(c.uid)); err != nil {
			note("the host's loopback is not closed to guests' user-mode NICs (nftables): %v", err)
		} else {
			c.loopback = true
		}
	}
	if root {
		cg, err := detectCgroups(d.cfg.CgroupParent)
		if err != nil {
			note("VMs get no cgroup: %v", err)
		} else {
			c.cgroups = cg
			for _, m := range cg.missing {
				note("VMs' cgroups have no %s controller on this host", m)
			}
		}
	}
	return c
}

// qemuUser resolves the user QEMU drops to, making the default one when it
// does not exist. It returns "" (QEMU stays root) with a note when it
// cannot.
func (d *Driver) qemuUser(opts qemuOptions, note func(string, ...any)) (string, int, int) {
	if !opts.runas && !opts.runWithUser {
		note("QEMU runs as root: it has neither -runas nor -run-with user=")
		return "", 0, 0
	}
	name := d.cfg.User
	if name == "" {
		name = DefaultUser
	}
	if name == "root" {
		note("QEMU runs as root: the driver was configured so")
		return "", 0, 0
	}
	u, err := lookupOrAddUser(name, name == DefaultUser)
	if err != nil {
		note("QEMU runs as root: %v", err)
		return "", 0, 0
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil || uid == 0 {
		note("QEMU runs as root: user %s has uid %s, gid %s", name, u.Uid, u.Gid)
		return "", 0, 0
	}
	return name, uid, gid
}

var addUserMu sync.Mutex

// lookupOrAddUser finds a user, making it as a system user with no home
// and no shell when add is set and it does not exist.
func lookupOrAddUser(name string, add bool) (*user.User, error) {
	addUserMu.Lock()
	defer addUserMu.Unlock()
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	var unknown user.UnknownUserError
	if !errors.As(err, &unknown) || !add {
		return nil, fmt.Errorf("looking up user %s: %w", name, err)
	}
	out, err := exec.Command("useradd", "--system", "--user-group", "--no-create-home",
		"--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
		"--comment", "Polyvisor guests", name).CombinedOutput()
	if u, lerr := user.Lookup(name); lerr == nil {
		return u, nil // made here, or by a concurrent agent
	}
	if err != nil {
		return nil, fmt.Errorf("user %s does not exist and useradd failed: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil, fmt.Errorf("user %s does not exist after useradd", name)
}

// ensureEmptyDir makes dir an empty directory owned by root that nobody
// else can write, for QEMU to chroot into.
func ensureEmptyDir(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolving chroot dir: %w", err)
	}
	if err := os.MkdirAll(dir, 0o555); err != nil {
		return "", fmt.Errorf("making chroot dir: %w", err)
	}
	if err := os.Chown(dir, 0, 0); err != nil {
		return "", fmt.Errorf("owning chroot dir: %w", err)
	}
	if err := os.Chmod(dir, 0o555); err != nil {
		return "", fmt.Errorf("protecting chroot dir: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", fmt.Errorf("reading chroot dir: %w", err)
	}
	if len(ents) > 0 {
		return "", fmt.Errorf("chroot dir %s is not empty", dir)
	}
	return dir, nil
}

// qemuOptions are the confinement options a QEMU binary offers.
type qemuOptions struct {
	sandbox       bool // -sandbox
	runas, chroot bool // -runas, -chroot
	// -run-with user= (QEMU 9.1 and later) and chroot= (8.1 and later)
	runWithUser, runWithChroot bool
}

// parseQEMUHelp reads the options from the output of qemu -help.
func parseQEMUHelp(help string) qemuOptions {
	var o qemuOptions
	for _, line := range strings.Split(help, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "-sandbox":
			o.sandbox = true
		case "-runas":
			o.runas = true
		case "-chroot":
			o.chroot = true
		case "-run-with":
			o.runWithUser = strings.Contains(line, "user=")
			o.runWithChroot = strings.Contains(line, "chroot=")
		}
	}
	return o
}

// info describes the confinement for the host's status.
func (c *confinement) info() hypervisor.Confinement {
	i := hypervisor.Confinement{User: c.jail.User, Cgroups: c.cgroups.version(), Notes: c.notes}
	if c.jail.Sandbox {
		i.Sandbox = "seccomp"
	}
	switch {
	case c.passt == "":
		i.Network = "none: passt is not installed"
	case c.loopback:
		i.Network = "passt, host loopback closed"
	default:
		i.Network = "passt, host loopback reachable"
	}
	return i
}
