package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/rvtools/rvtoolstest"
	"github.com/polyvisor/polyvisor/internal/server"
)

// TestPlanCommandsOnAnRVToolsExport runs the three plan commands against a
// real server with a workbook in RVTools' layout.
func TestPlanCommandsOnAnRVToolsExport(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{})
	book := rvtoolstest.Book{
		"vInfo": {rvtoolstest.InfoHeader,
			rvtoolstest.Info("web1", "poweredOn", "False", 8, "16 GB", "esx1"),
			rvtoolstest.Info("web2", "poweredOn", "False", 8, "16 GB", "esx2"),
			rvtoolstest.Info("db1", "poweredOn", "False", 16, "64 GB", "esx3"),
		},
		"vCPU":    {rvtoolstest.CPUHeader, rvtoolstest.CPU("web1", 5200), rvtoolstest.CPU("web2", 2600), rvtoolstest.CPU("db1", 10400)},
		"vMemory": {rvtoolstest.MemHeader, rvtoolstest.Memory("web1", 8192), rvtoolstest.Memory("web2", 8192), rvtoolstest.Memory("db1", 32768)},
		"vHost": {rvtoolstest.HostHeader,
			rvtoolstest.Host("esx1", "prod", "False", 2600, 8, "64 GB"),
			rvtoolstest.Host("esx2", "prod", "False", 2600, 8, "64 GB"),
			rvtoolstest.Host("esx3", "prod", "False", 2600, 8, "64 GB"),
		},
	}
	raw, err := book.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "estate.xlsx")
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}

	// 2 + 1 + 4 cores and 8 + 8 + 32 GiB: at 0.9 of 8 cores and 64 GiB
	// (7.2 cores, 57.6 GiB) one host holds them all.
	out, errOut, code := cli(t, "", rs.asRoot("plan", "consolidate", "--rvtools", file, "--target-utilization", "0.9")...)
	if code != ExitOK {
		t.Fatalf("plan consolidate: exit %d: %s", code, errOut)
	}
	for _, want := range []string{"Hosts: 3 now, 1 planned", "at 90% target utilization", "2 host(s) empty", "2 VM(s) move", "esx3  prod     7.2c/57.6G  4c/32G  0c/0M   1→0  free", "db1   esx3  esx1"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan consolidate output lacks %q:\n%s", want, out)
		}
	}
	out, errOut, code = cli(t, "", rs.asRoot("-o", "json", "plan", "consolidate", "--rvtools", file, "--target-utilization", "0.5")...)
	if code != ExitOK {
		t.Fatalf("plan consolidate -o json: exit %d: %s", code, errOut)
	}
	var p api.Plan
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("-o json: %v\n%s", err, out)
	}
	// At 0.5 (4 cores) db1 needs a host alone, web1 and web2 share one.
	if p.Source != api.PlanSourceRVTools || p.HostsAfter != 2 || p.Options.TargetUtilization != 0.5 {
		t.Fatalf("plan at 0.5: %+v", p)
	}

	out, errOut, code = cli(t, "", rs.asRoot("plan", "what-if", "--rvtools", file, "--add-hosts", "cpus=32,memory=256GiB x 2",
		"--remove-host", "esx1", "--remove-host", "esx2", "--remove-host", "esx3", "--grow", "20%")...)
	if code != ExitOK || !strings.Contains(out, "Fits:") || !strings.Contains(out, "yes") || !strings.Contains(out, "new-1, new-2") ||
		!strings.Contains(out, "2 now, 1 after") || !strings.Contains(out, "20%") {
		t.Fatalf("plan what-if: exit %d\n%s\n%s", code, out, errOut)
	}

	out, errOut, code = cli(t, "", rs.asRoot("plan", "forecast", "--rvtools", file)...)
	if code != ExitOK || !strings.Contains(out, "prod") || !strings.Contains(out, "7/24") || !strings.Contains(out, "never at this trend") {
		t.Fatalf("plan forecast: exit %d\n%s\n%s", code, out, errOut)
	}

	// Mistakes are named before anything is sent, or by the server.
	for _, c := range []struct {
		args []string
		says string
	}{
		{[]string{"plan", "consolidate", "--target-utilization", "1.5"}, "--target-utilization"},
		{[]string{"plan", "consolidate", "--include-powered-off"}, "--rvtools only"},
		{[]string{"plan", "what-if"}, "needs a change"},
		{[]string{"plan", "what-if", "--add-hosts", "cpus=4 x 2"}, "cpus and memory are required"},
		{[]string{"plan", "what-if", "--grow", "lots"}, "--grow"},
		{[]string{"plan", "what-if", "--rvtools", file, "--remove-host", "esx9"}, "removeHosts[0]"},
		{[]string{"plan", "consolidate", "--rvtools", filepath.Join(t.TempDir(), "none.xlsx")}, "--rvtools"},
	} {
		_, errOut, code := cli(t, "", rs.asRoot(c.args...)...)
		if code == ExitOK || !strings.Contains(errOut, c.says) {
			t.Errorf("%v: exit %d, %s (want it to say %q)", c.args, code, errOut, c.says)
		}
	}
}

func TestParseHostShape(t *testing.T) {
	sh, err := parseHostShape("cpus=32,memory=256GiB x 4")
	if err != nil || sh.Count != 4 || sh.CPUs != 32 || sh.MemoryMiB != 256*1024 {
		t.Fatalf("%+v %v", sh, err)
	}
	sh, err = parseHostShape("cpus=8, memory=64G, cluster=east, cpu-overcommit=4")
	if err != nil || sh.Count != 1 || sh.Cluster != "east" || sh.CPUOvercommit != 4 {
		t.Fatalf("%+v %v", sh, err)
	}
	for _, bad := range []string{"", "cpus=32", "cpus=32,memory=1G x 0", "cpus=-1,memory=1G", "gpus=1,cpus=1,memory=1G", "cpus=1,memory=huge"} {
		if _, err := parseHostShape(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
