package qemu

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const testUID = "0b7e6a4c-3f1d-4e8a-9c2b-5d6f7a8b9c0d"

func testPaths(disks ...hypervisor.DiskFile) Paths {
	dir := "/var/lib/polyvisor/vms/" + testUID
	return Paths{
		Dir:        dir,
		QMP:        dir + "/qmp.sock",
		Serial:     dir + "/serial.sock",
		VNC:        dir + "/vnc.sock",
		ConsoleLog: dir + "/console.log",
		PIDFile:    dir + "/qemu.pid",
		Disks:      disks,
	}
}

func disk(name string) hypervisor.DiskFile {
	return hypervisor.DiskFile{Name: name, Path: "/var/lib/polyvisor/vms/" + testUID + "/" + name + ".qcow2", Format: "qcow2", SizeMiB: 1024}
}

func TestBuildArgsGolden(t *testing.T) {
	base := hypervisor.VMConfig{Name: "web-1", UID: testUID, VCPUs: 1, MemoryMiB: 256}
	tests := []struct {
		name  string
		cfg   func(c *hypervisor.VMConfig)
		paths Paths
		accel string
	}{
		{
			name: "kernel-boot",
			cfg: func(c *hypervisor.VMConfig) {
				c.Kernel, c.Initrd, c.Cmdline = "/images/vmlinuz", "/images/initrd.img", "console=ttyS0 quiet"
			},
			paths: testPaths(disk("root")),
			accel: "tcg",
		},
		{
			name:  "firmware-disk-boot-kvm",
			cfg:   func(c *hypervisor.VMConfig) { c.VCPUs, c.MemoryMiB = 4, 4096 },
			paths: testPaths(disk("root")),
			accel: "kvm",
		},
		{
			// The root disk is a volume: fd 3 is its file, in fd set 1;
			// it boots first, before the VM's own data disk.
			name: "root-volume",
			cfg:  func(c *hypervisor.VMConfig) {},
			paths: func() Paths {
				p := testPaths(disk("data"))
				p.BootVolume = &BootVolume{Config: hypervisor.VolumeConfig{Name: "web1-root", Path: "/pool/p/u.qcow2", IOPS: 500}, FD: 3, Set: bootVolumeSet}
				return p
			}(),
			accel: "tcg",
		},
		{
			name: "efi-firmware-confined",
			cfg:  func(c *hypervisor.VMConfig) { c.Firmware = hypervisor.FirmwareEFI },
			paths: func() Paths {
				p := testPaths(disk("root"))
				p.EFICode, p.EFIVars = "/usr/share/OVMF/OVMF_CODE_4M.fd", p.Dir+"/efivars.fd"
				p.Jail = Jail{Sandbox: true, User: "polyvisor-qemu", Chroot: "/var/lib/polyvisor/vms/.empty", RunWithUser: true, RunWithChroot: true}
				return p
			}(),
			accel: "tcg",
		},
		{
			// A root volume of an nbd pool: fd 3 is a connection to its
			// export, which QEMU's nbd driver takes.
			name: "root-volume-nbd",
			cfg:  func(c *hypervisor.VMConfig) {},
			paths: func() Paths {
				p := testPaths()
				p.BootVolume = &BootVolume{Config: hypervisor.VolumeConfig{Name: "web1-root", Export: "nbd://10.0.0.5:10809/5f0c-uid"}, FD: 3, Set: bootVolumeSet}
				return p
			}(),
			accel: "tcg",
		},
		{
			name: "compatible-devices",
			cfg: func(c *hypervisor.VMConfig) {
				c.Disks = []hypervisor.DiskConfig{{Name: "root", Bus: "sata"}, {Name: "data"}, {Name: "logs", Bus: "sata"}}
				c.NICs = []hypervisor.NICConfig{{Network: "user", MAC: "52:54:00:aa:bb:cc", Model: "e1000"}, {Network: "web", MAC: "52:54:00:aa:bb:cd", Tap: "pvt1", Model: "e1000"}}
			},
			paths: func() Paths {
				p := testPaths(disk("root"), disk("data"), disk("logs"))
				p.NetFDs = []int{3, 4}
				return p
			}(),
			accel: "tcg",
		},
		{
			name:  "blank-and-overlay-disks",
			cfg:   func(c *hypervisor.VMConfig) {},
			paths: testPaths(disk("root"), disk("data"), disk("scratch")),
			accel: "tcg",
		},
		{
			name: "cloud-init-seed",
			cfg:  func(c *hypervisor.VMConfig) { c.CloudInit = &hypervisor.CloudInitConfig{} },
			paths: func() Paths {
				p := testPaths(disk("root"))
				p.Seed = p.Dir + "/seed.iso"
				return p
			}(),
			accel: "tcg",
		},
		{
			name: "two-nics",
			cfg: func(c *hypervisor.VMConfig) {
				c.NICs = []hypervisor.NICConfig{{Network: "user", MAC: "52:54:00:aa:bb:cc"}, {Network: "user"}}
			},
			paths: func() Paths {
				p := testPaths(disk("root"))
				p.NetFDs = []int{3, 4}
				return p
			}(),
			accel: "tcg",
		},
		{
			name: "network-nics",
			cfg: func(c *hypervisor.VMConfig) {
				c.NICs = []hypervisor.NICConfig{
					{Network: "p1/web", MAC: "52:54:00:00:00:0a", Tap: "pvtp00000000a1"},
					{Network: "user", MAC: "52:54:00:aa:bb:cc"},
					{Network: "p1/db", MAC: "52:54:00:00:00:0b", Tap: "pvtp00000000b1"},
				}
			},
			paths: func() Paths {
				p := testPaths(disk("root"))
				p.NetFDs = []int{3, 4, 5}
				return p
			}(),
			accel: "tcg",
		},
		{
			name: "nic-without-network",
			cfg: func(c *hypervisor.VMConfig) {
				c.NICs = []hypervisor.NICConfig{{Network: "user", MAC: "52:54:00:aa:bb:cc"}}
			},
			paths: testPaths(disk("root")),
			accel: "tcg",
		},
		{
			name: "confined",
			cfg: func(c *hypervisor.VMConfig) {
				c.NICs = []hypervisor.NICConfig{{Network: "user", MAC: "52:54:00:aa:bb:cc"}}
				c.Kernel = "/images/vmlinuz"
			},
			paths: func() Paths {
				p := testPaths(disk("root"))
				p.NetFDs = []int{3}
				p.Jail = Jail{Sandbox: true, User: "polyvisor-qemu", Chroot: "/var/lib/polyvisor/vms/.empty"}
				return p
			}(),
			accel: "kvm",
		},
		{
			name: "confined-run-with",
			cfg:  func(c *hypervisor.VMConfig) {},
			paths: func() Paths {
				p := testPaths(disk("root"))
				p.Jail = Jail{Sandbox: true, User: "polyvisor-qemu", Chroot: "/var/lib/polyvisor/vms/.empty", RunWithUser: true, RunWithChroot: true}
				return p
			}(),
			accel: "kvm",
		},
		{
			name: "sandbox-as-root",
			cfg:  func(c *hypervisor.VMConfig) {},
			paths: func() Paths {
				p := testPaths(disk("root"))
				p.Jail = Jail{Sandbox: true}
				return p
			}(),
			accel: "tcg",
		},
		{
			name: "start-paused",
			cfg: func(c *hypervisor.VMConfig) {
				c.StartPaused = true
				c.Kernel = "/images/vmlinuz"
			},
			paths: testPaths(),
			accel: "tcg",
		},
		{
			name: "defaults-and-escaping",
			cfg: func(c *hypervisor.VMConfig) {
				c.Name, c.UID, c.VCPUs, c.MemoryMiB = "odd,name", "not-a-uuid", 0, 0
			},
			paths: func() Paths {
				p := testPaths(hypervisor.DiskFile{Name: "root", Path: "/data/a,b/root.qcow2"})
				p.Serial = "/run/polyvisor/0123456789abcdef/serial.sock"
				return p
			}(),
			accel: "tcg",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			tt.cfg(&cfg)
			got := strings.Join(BuildArgs(cfg, tt.paths, tt.accel), "\n") + "\n"
			golden := filepath.Join("testdata", tt.name+".golden")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading golden file (run with -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("args differ from %s (run with -update to accept):\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func TestBuildArgsIsDeterministic(t *testing.T) {
	cfg := hypervisor.VMConfig{Name: "a", UID: testUID, NICs: []hypervisor.NICConfig{{}}}
	a := strings.Join(BuildArgs(cfg, testPaths(), "tcg"), " ")
	b := strings.Join(BuildArgs(cfg, testPaths(), "tcg"), " ")
	if a != b {
		t.Fatalf("BuildArgs is not deterministic:\n%s\n%s", a, b)
	}
	if !strings.Contains(a, "mac="+MACFor(testUID, 0)) {
		t.Errorf("generated MAC missing: %s", a)
	}
	if strings.Contains(a, "-cpu") {
		t.Errorf("tcg must keep the default cpu model: %s", a)
	}
}

// TestBuildArgsNeverUserNetwork: no command line uses QEMU's own
// user-mode network (slirp), which maps its gateway address to the host's
// loopback; a NIC is connected to the socket it is given, or to nothing.
func TestBuildArgsNeverUserNetwork(t *testing.T) {
	nics := []hypervisor.NICConfig{{Network: "user"}, {}, {Network: "user", MAC: "52:54:00:01:02:03"}}
	for _, fds := range [][]int{nil, {3}, {3, 4, 5}} {
		cfg := hypervisor.VMConfig{Name: "n", UID: testUID, NICs: nics}
		p := testPaths()
		p.NetFDs = fds
		args := BuildArgs(cfg, p, "tcg")
		netdevs := 0
		for i, a := range args {
			if a != "-netdev" {
				continue
			}
			netdevs++
			if v := args[i+1]; !strings.HasPrefix(v, "stream,") || strings.Contains(v, "user") {
				t.Errorf("netdev %q with fds %v", v, fds)
			}
		}
		if netdevs != len(fds) {
			t.Errorf("%d netdevs for fds %v", netdevs, fds)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	// The command name may contain spaces and parentheses.
	line := "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 3 0 987654 100000 200 0\n"
	st, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if st.State != 'S' || st.Start != 987654 {
		t.Errorf("got %+v", st)
	}
	if _, err := parseProcStat([]byte("1 (x) S 1")); err == nil {
		t.Error("want error for a short line")
	}
	self, err := readProcStat(os.Getpid())
	if err != nil || self.Start == 0 {
		t.Fatalf("own stat: %+v, %v", self, err)
	}
	if !processAlive(os.Getpid(), self.Start) || processAlive(os.Getpid(), self.Start+1) {
		t.Error("processAlive does not check the start time")
	}
}

func TestValidate(t *testing.T) {
	bad := []hypervisor.VMConfig{
		{UID: "../x"},
		{UID: "kept"},
		{UID: "a", Disks: []hypervisor.DiskConfig{{Name: "d", SizeMiB: 1}, {Name: "d", SizeMiB: 1}}},
		{UID: "a", Disks: []hypervisor.DiskConfig{{Name: "blank"}}},
		{UID: "a", NICs: []hypervisor.NICConfig{{Network: "br0"}}},
		{UID: "a", Initrd: "/x"},
		{UID: "a", NICs: []hypervisor.NICConfig{{Network: "p/a", Tap: "tap,fd=3"}}},
		{UID: "a", NICs: []hypervisor.NICConfig{{Network: "p/a", Tap: "a-name-longer-than-15"}}},
		{UID: "a", NICs: func() []hypervisor.NICConfig {
			var n []hypervisor.NICConfig
			for i := 0; i <= NICSlots; i++ {
				n = append(n, hypervisor.NICConfig{Network: "p/a", Tap: fmt.Sprintf("pvtp%d", i)})
			}
			return n
		}()},
	}
	for _, c := range bad {
		if err := validate(c); err == nil {
			t.Errorf("validate(%+v) = nil, want error", c)
		}
	}
	if err := validate(hypervisor.VMConfig{UID: testUID, Disks: []hypervisor.DiskConfig{{SizeMiB: 8}},
		NICs: []hypervisor.NICConfig{{Network: "user"}, {Network: "p/a", Tap: "pvtp0123456789"}}}); err != nil {
		t.Errorf("valid config: %v", err)
	}
}
