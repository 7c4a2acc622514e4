package qemu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// Each VM's processes (QEMU and its passt) run in a cgroup of their own
// whose limits come from the VM's size: memory, CPU time and the number of
// tasks. cgroup v2 is used when its hierarchy offers the memory, cpu and
// pids controllers; otherwise the v1 hierarchies of those controllers.
//
// Where the VMs' cgroups go (their parent) is Config.CgroupParent: an
// absolute path is taken from the hierarchy's root, a relative one from the
// agent's own cgroup. By default it is /polyvisor under cgroup v2 (v2 lets
// only a cgroup without processes of its own delegate controllers, so not
// below the agent's cgroup) and polyvisor below the agent's own cgroup
// under v1, so VMs stay inside whatever the host gave the agent. Cgroups
// outlive the agent as the processes do; their paths are kept in the
// handle, and removed once the VM's processes are gone.

// defaultCgroupName is the parent the driver makes, and removes when it is
// empty.
const defaultCgroupName = "polyvisor"

// extraCgroup is the Handle.Extra key of the VM's cgroup directories, one
// a line.
const extraCgroup = "cgroup"

// cgroupControllers are the controllers a VM's cgroup is limited by.
var cgroupControllers = []string{"memory", "cpu", "pids"}

// cgroups is where the driver makes its VMs' cgroups.
type cgroups struct {
	v2      bool
	parents []cgroupDir // v2: one, for all controllers; v1: one per controller
	missing []string    // controllers this host does not offer
}

// cgroupDir is a cgroup directory and, under v1, its controller.
type cgroupDir struct {
	controller string // "" under v2
	dir        string
}

// version is "v2", "v1", or "" when c is nil.
func (c *cgroups) version() string {
	switch {
	case c == nil:
		return ""
	case c.v2:
		return "v2"
	default:
		return "v1"
	}
}

// detectCgroups finds the cgroup hierarchies of this host from the
// process's mount table and its own cgroups, and makes the parent.
func detectCgroups(parent string) (*cgroups, error) {
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("reading mount table: %w", err)
	}
	self, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("reading own cgroup: %w", err)
	}
	c, err := parseCgroups(mountinfo, self, parent, func(dir string) string {
		b, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		return string(b)
	})
	if err != nil {
		return nil, err
	}
	if err := c.makeParents(); err != nil {
		return nil, err
	}
	return c, nil
}

// parseCgroups decides the hierarchies and parents from /proc/self/mountinfo
// and /proc/self/cgroup; controllers reads a v2 cgroup's cgroup.controllers.
func parseCgroups(mountinfo, self []byte, parent string, controllers func(dir string) string) (*cgroups, error) {
	type mount struct{ root, point string }
	var v2 *mount
	v1 := map[string]mount{}
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 {
			continue
		}
		m := mount{root: f[3], point: unescapeMount(f[4])}
		switch g[0] {
		case "cgroup2":
			if v2 == nil {
				v2 = &m
			}
		case "cgroup":
			for _, o := range strings.Split(g[2], ",") {
				if slices.Contains(cgroupControllers, o) {
					v1[o] = m
				}
			}
		}
	}
	own := map[string]string{} // controller ("" for v2) -> own cgroup path
	sc = bufio.NewScanner(bytes.NewReader(self))
	for sc.Scan() {
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && f[1] == "" {
			own[""] = f[2]
			continue
		}
		for _, ctl := range strings.Split(f[1], ",") {
			own[ctl] = f[2]
		}
	}
	dirOf := func(m mount, ownPath, def string) string {
		p := parent
		if p == "" {
			p = def
		}
		if !filepath.IsAbs(p) {
			p = filepath.Join(ownPath, p)
		}
		// A mount of a cgroup below the hierarchy's root shows that root.
		rel, err := filepath.Rel(m.root, filepath.Clean(p))
		if err != nil || strings.HasPrefix(rel, "..") {
			rel = filepath.Clean(p)
		}
		return filepath.Join(m.point, rel)
	}
	if v2 != nil {
		have := strings.Fields(controllers(v2.point))
		if !slices.ContainsFunc(cgroupControllers, func(c string) bool { return !slices.Contains(have, c) }) {
			return &cgroups{v2: true, parents: []cgroupDir{{dir: dirOf(*v2, own[""], "/"+defaultCgroupName)}}}, nil
		}
	}
	c := &cgroups{}
	for _, ctl := range cgroupControllers {
		m, ok := v1[ctl]
		if !ok {
			c.missing = append(c.missing, ctl)
			continue
		}
		c.parents = append(c.parents, cgroupDir{controller: ctl, dir: dirOf(m, own[ctl], defaultCgroupName)})
	}
	if len(c.parents) == 0 {
		if v2 != nil {
			return nil, fmt.Errorf("cgroup v2 at %s offers %q, not the memory, cpu and pids controllers, and no cgroup v1 hierarchy has them",
				v2.point, strings.TrimSpace(controllers(v2.point)))
		}
		return nil, errors.New("no cgroup hierarchy is mounted")
	}
	return c, nil
}

// unescapeMount undoes the octal escapes of a mountinfo path.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// cgroupMu serializes making and removing cgroup directories, so a parent
// is never removed while a VM's cgroup is being made in it.
var cgroupMu sync.Mutex

// makeParents checks that the parents can be made (and, under v2, can
// delegate the controllers to their children), leaving none of its own
// behind: they are made again at each VM's start.
func (c *cgroups) makeParents() error {
	cgroupMu.Lock()
	defer cgroupMu.Unlock()
	for _, p := range c.parents {
		if err := makeParent(p.dir, c.v2); err != nil {
			return err
		}
		if filepath.Base(p.dir) == defaultCgroupName {
			syscall.Rmdir(p.dir) // fails while VMs' cgroups are in it
		}
	}
	return nil
}

// makeParent makes a parent and, under v2, delegates the controllers to
// its children from the hierarchy's root down.
func makeParent(dir string, v2 bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("making cgroup %s: %w", dir, err)
	}
	if v2 {
		return delegateControllers(dir)
	}
	return nil
}

// delegateControllers enables the VM controllers in the subtree_control of
// dir and of each of its ancestors up to the hierarchy's root.
func delegateControllers(dir string) error {
	var chain []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "cgroup.subtree_control")); err != nil {
			break
		}
		chain = append([]string{d}, chain...)
		if d == filepath.Dir(d) {
			break
		}
	}
	for _, d := range chain {
		b, err := os.ReadFile(filepath.Join(d, "cgroup.subtree_control"))
		if err != nil {
			return fmt.Errorf("reading controllers of cgroup %s: %w", d, err)
		}
		enabled := strings.Fields(string(b))
		var add []string
		for _, ctl := range cgroupControllers {
			if !slices.Contains(enabled, ctl) {
				add = append(add, "+"+ctl)
			}
		}
		if len(add) == 0 {
			continue
		}
		if err := os.WriteFile(filepath.Join(d, "cgroup.subtree_control"), []byte(strings.Join(add, " ")), 0); err != nil {
			return fmt.Errorf("delegating %s in cgroup %s: %w", strings.Join(add, " "), d, err)
		}
	}
	return nil
}

// vmLimits are the limits of a VM's cgroup.
type vmLimits struct {
	MemoryBytes int64 // memory.max
	CPUQuotaUs  int64 // CPU time per period, in microseconds
	CPUPeriodUs int64
	Tasks       int64 // pids.max: processes and threads
}

// Overheads a VM's cgroup allows beyond its size.
const (
	// QEMU's own memory (device model, VGA memory, firmware, block and
	// network buffers) and passt's, plus 1/32 of the guest's memory for
	// page tables and the like.
	memOverheadMiB = 256
	// Under TCG, QEMU's translation cache: min(1 GiB, host memory/8).
	tcgCacheMiB = 1024
	// Half a CPU for QEMU's main loop and I/O threads beside the vCPUs.
	cpuOverheadPct = 50
	// QEMU's threads (main loop, RCU, I/O worker pool of up to 64) and
	// passt, beside one thread per vCPU.
	taskOverhead = 256
)

// limitsFor sizes a VM's cgroup.
func limitsFor(cfg hypervisor.VMConfig, accel string) vmLimits {
	vcpus, mem := int64(cfg.VCPUs), cfg.MemoryMiB
	if vcpus <= 0 {
		vcpus = defaultVCPUs
	}
	if mem <= 0 {
		mem = defaultMemoryMiB
	}
	overhead := memOverheadMiB + mem/32
	if accel != AccelKVM {
		overhead += tcgCacheMiB
	}
	const period = 100000
	return vmLimits{
		MemoryBytes: (mem + overhead) << 20,
		CPUQuotaUs:  (vcpus*100 + cpuOverheadPct) * period / 100,
		CPUPeriodUs: period,
		Tasks:       taskOverhead + vcpus,
	}
}

// vmCgroup is one VM's cgroup: a directory per hierarchy.
type vmCgroup struct {
	v2   bool
	dirs []cgroupDir
}

// forVM is the cgroup of the VM with this uid.
func (c *cgroups) forVM(uid string) *vmCgroup {
	if c == nil {
		return nil
	}
	g := &vmCgroup{v2: c.v2}
	for _, p := range c.parents {
		g.dirs = append(g.dirs, cgroupDir{controller: p.controller, dir: filepath.Join(p.dir, uid)})
	}
	return g
}

// paths are the cgroup's directories, as kept in the handle.
func (g *vmCgroup) paths() string {
	var s []string
	for _, d := range g.dirs {
		s = append(s, d.dir)
	}
	return strings.Join(s, "\n")
}

// create makes the cgroup, or takes it over from an earlier start, and
// sets its limits.
func (g *vmCgroup) create(l vmLimits) error {
	cgroupMu.Lock()
	defer cgroupMu.Unlock()
	for _, d := range g.dirs {
		if err := makeParent(filepath.Dir(d.dir), g.v2); err != nil {
			return err
		}
		if err := os.Mkdir(d.dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("making vm cgroup: %w", err)
		}
		var files [][2]string
		switch d.controller {
		case "": // v2
			files = [][2]string{
				{"memory.max", strconv.FormatInt(l.MemoryBytes, 10)},
				{"memory.oom.group", "1"}, // an OOM kill takes QEMU and its passt together
				{"cpu.max", fmt.Sprintf("%d %d", l.CPUQuotaUs, l.CPUPeriodUs)},
				{"pids.max", strconv.FormatInt(l.Tasks, 10)},
			}
		case "memory":
			files = [][2]string{{"memory.limit_in_bytes", strconv.FormatInt(l.MemoryBytes, 10)}}
		case "cpu":
			files = [][2]string{
				{"cpu.cfs_period_us", strconv.FormatInt(l.CPUPeriodUs, 10)},
				{"cpu.cfs_quota_us", strconv.FormatInt(l.CPUQuotaUs, 10)},
			}
		case "pids":
			files = [][2]string{{"pids.max", strconv.FormatInt(l.Tasks, 10)}}
		}
		for _, f := range files {
			if err := os.WriteFile(filepath.Join(d.dir, f[0]), []byte(f[1]), 0); err != nil {
				return fmt.Errorf("limiting vm cgroup: %w", err)
			}
		}
	}
	return nil
}

// add moves a process (all its threads) into the cgroup.
func (g *vmCgroup) add(pid int) error {
	for _, d := range g.dirs {
		if err := os.WriteFile(filepath.Join(d.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("moving process %d into cgroup %s: %w", pid, d.dir, err)
		}
	}
	return nil
}

// removeCgroups removes cgroup directories (kept one a line in a handle)
// once their processes are gone, waiting a little for exiting ones, and the
// driver's own parent when it is left empty. It reports what it could not
// remove.
func removeCgroups(paths string) error {
	if paths == "" {
		return nil
	}
	cgroupMu.Lock()
	defer cgroupMu.Unlock()
	var errs []error
	for _, dir := range strings.Split(paths, "\n") {
		deadline := time.Now().Add(2 * time.Second)
		for {
			err := syscall.Rmdir(dir)
			if err == nil || errors.Is(err, syscall.ENOENT) {
				break
			}
			if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dir, err))
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if parent := filepath.Dir(dir); filepath.Base(parent) == defaultCgroupName {
			syscall.Rmdir(parent) // fails while other VMs' cgroups are in it
		}
	}
	return errors.Join(errs...)
}

// RemoveCgroups removes the cgroups a VM's handle names, once the VM's
// processes are gone. Stop and Destroy do it themselves; it is for a VM
// whose processes were ended behind the driver's back, as tests do.
func RemoveCgroups(h *hypervisor.Handle) error {
	return removeCgroups(h.Extra[extraCgroup])
}
