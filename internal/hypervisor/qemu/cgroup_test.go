package qemu

import (
	"reflect"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// Mount tables and own cgroups of the kinds of host Polyvisor runs on.
const (
	// cgroup v2 only (Debian 12 with systemd).
	mountsV2 = `25 30 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	selfV2 = "0::/system.slice/polyvisor.service\n"
	// Hybrid: v1 controllers, an empty v2 hierarchy (this kind of host).
	mountsHybrid = `30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/cpuacct rw - cgroup cgroup rw,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd
36 30 0:32 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
`
	selfHybrid = `9:name=systemd:/
8:pids:/
4:memory:/process_api/9f8e
2:cpuacct:/
1:cpu:/
0::/
`
	// v1 with cpu and cpuacct on one hierarchy, and no pids controller.
	mountsV1NoPids = `31 30 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
`
	selfV1NoPids = "3:cpu,cpuacct:/agent\n2:memory:/agent\n"
)

func TestParseCgroups(t *testing.T) {
	all := func(string) string { return "cpuset cpu io memory hugetlb pids rdma misc\n" }
	hugetlb := func(string) string { return "hugetlb\n" }
	cases := []struct {
		name, mounts, self, parent string
		controllers                func(string) string
		want                       *cgroups
		err                        string
	}{
		{"v2 default", mountsV2, selfV2, "", all,
			&cgroups{v2: true, parents: []cgroupDir{{dir: "/sys/fs/cgroup/polyvisor"}}}, ""},
		{"v2 relative to the agent", mountsV2, selfV2, "vms", all,
			&cgroups{v2: true, parents: []cgroupDir{{dir: "/sys/fs/cgroup/system.slice/polyvisor.service/vms"}}}, ""},
		{"v2 absolute", mountsV2, selfV2, "/machine.slice/polyvisor", all,
			&cgroups{v2: true, parents: []cgroupDir{{dir: "/sys/fs/cgroup/machine.slice/polyvisor"}}}, ""},
		{"v2 without controllers", mountsV2, selfV2, "", hugetlb, nil,
			"offers \"hugetlb\", not the memory, cpu and pids controllers"},
		{"hybrid uses v1 below the agent", mountsHybrid, selfHybrid, "", hugetlb,
			&cgroups{parents: []cgroupDir{
				{"memory", "/sys/fs/cgroup/memory/process_api/9f8e/polyvisor"},
				{"cpu", "/sys/fs/cgroup/cpu/polyvisor"},
				{"pids", "/sys/fs/cgroup/pids/polyvisor"},
			}}, ""},
		{"v1 absolute", mountsHybrid, selfHybrid, "/polyvisor", hugetlb,
			&cgroups{parents: []cgroupDir{
				{"memory", "/sys/fs/cgroup/memory/polyvisor"},
				{"cpu", "/sys/fs/cgroup/cpu/polyvisor"},
				{"pids", "/sys/fs/cgroup/pids/polyvisor"},
			}}, ""},
		{"v1 without pids", mountsV1NoPids, selfV1NoPids, "", hugetlb,
			&cgroups{parents: []cgroupDir{
				{"memory", "/sys/fs/cgroup/memory/agent/polyvisor"},
				{"cpu", "/sys/fs/cgroup/cpu,cpuacct/agent/polyvisor"},
			}, missing: []string{"pids"}}, ""},
		{"none", "20 1 0:5 / /proc rw - proc proc rw\n", "", "", hugetlb, nil, "no cgroup hierarchy"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := parseCgroups([]byte(c.mounts), []byte(c.self), c.parent, c.controllers)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %+v, %v; want an error containing %q", got, err, c.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func TestLimitsFor(t *testing.T) {
	kvm := limitsFor(hypervisor.VMConfig{VCPUs: 2, MemoryMiB: 4096}, AccelKVM)
	if want := (vmLimits{MemoryBytes: (4096 + 256 + 128) << 20, CPUQuotaUs: 250000, CPUPeriodUs: 100000, Tasks: 258}); kvm != want {
		t.Errorf("kvm limits %+v, want %+v", kvm, want)
	}
	tcg := limitsFor(hypervisor.VMConfig{}, AccelTCG)
	if want := (vmLimits{MemoryBytes: (256 + 256 + 8 + 1024) << 20, CPUQuotaUs: 150000, CPUPeriodUs: 100000, Tasks: 257}); tcg != want {
		t.Errorf("tcg limits of a default vm %+v, want %+v", tcg, want)
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/sys/fs/cgroup/a\040b`); got != "/sys/fs/cgroup/a b" {
		t.Errorf("got %q", got)
	}
}
