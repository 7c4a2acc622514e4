package rvtools

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/planner"
	"github.com/polyvisor/polyvisor/internal/rvtools/rvtoolstest"
)

type book = rvtoolstest.Book

var (
	infoHeader, cpuHeader, memHeader, hostHeader = rvtoolstest.InfoHeader, rvtoolstest.CPUHeader, rvtoolstest.MemHeader, rvtoolstest.HostHeader
	info, cpuRow, memRow                         = rvtoolstest.Info, rvtoolstest.CPU, rvtoolstest.Memory
)

func hostRow(name, maint string, speed, cores, mem any) []any {
	return rvtoolstest.Host(name, "prod", maint, speed, cores, mem)
}

func workbook(t *testing.T, b book) *bytes.Reader {
	t.Helper()
	raw, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return bytes.NewReader(raw)
}

func goodBook() book {
	return book{
		SheetInfo: {infoHeader,
			info("web1", "poweredOn", "False", 4, 8192, "esx1"),
			info("web2", "poweredOn", "False", "4", "8 GB", "esx1"), // text cells with a unit
			info("db1", "poweredOn", "False", 8, "32,768", "esx2"),  // thousands separator
			info("old", "poweredOff", "False", 2, 4096, "esx2"),
			info("tmpl", "poweredOff", "True", 2, 4096, "esx2"),
			info("lost", "poweredOn", "False", 1, 1024, "esx9"), // host not in vHost
			{},
		},
		SheetCPU: {cpuHeader,
			cpuRow("web1", 2600),
			cpuRow("web2", ""), // empty: sized by allocation
			cpuRow("db1", "5.2 GHz"),
		},
		SheetMemory: {memHeader,
			memRow("web1", 4096),
			memRow("web2", "2 GiB"),
			memRow("db1", ""),
		},
		SheetHost: {hostHeader,
			hostRow("esx1", "False", 2600, 40, 393216),
			hostRow("esx2", "False", "2,6 GHz", "40", "384 GB"), // decimal comma
			hostRow("esx3", "True", 2600, 40, 393216),
		},
	}
}

func TestReadRVToolsLayout(t *testing.T) {
	imp, err := Read(context.Background(), workbook(t, goodBook()), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if imp.Templates != 1 || imp.PoweredOff != 1 || len(imp.Warnings) != 1 || !strings.Contains(imp.Warnings[0], "1 VMs name a host missing") {
		t.Fatalf("templates %d poweredOff %d warnings %v", imp.Templates, imp.PoweredOff, imp.Warnings)
	}
	hosts := map[string]planner.Host{}
	for _, h := range imp.Snapshot.Hosts {
		hosts[h.Name] = h
	}
	if h := hosts["esx2"]; h.CPUs != 40 || h.MemoryMiB != 393216 || h.Cluster != "prod" || h.Cordoned {
		t.Fatalf("esx2 %+v", h)
	}
	if !hosts["esx3"].Cordoned {
		t.Fatal("a host in maintenance mode is cordoned")
	}
	vms := map[string]planner.VM{}
	for _, v := range imp.Snapshot.VMs {
		vms[v.Name] = v
	}
	if len(vms) != 4 {
		t.Fatalf("vms %v", vms)
	}
	if v := vms["web1"]; v.VCPUs != 4 || v.MemoryMiB != 8192 || v.Demand == nil || v.Demand.CPU != 1 || v.Demand.MemoryMiB != 4096 {
		t.Fatalf("web1 %+v %+v", v, v.Demand)
	}
	if v := vms["web2"]; v.MemoryMiB != 8192 || v.Demand == nil || v.Demand.CPU != 0 || v.Demand.MemoryMiB != 2048 {
		t.Fatalf("web2 %+v %+v", v, v.Demand)
	}
	if v := vms["db1"]; v.MemoryMiB != 32768 || v.Demand == nil || v.Demand.CPU != 2 || v.Demand.MemoryMiB != 0 {
		t.Fatalf("db1 %+v %+v", v, v.Demand)
	}
	if v := vms["lost"]; v.Host != "" {
		t.Fatalf("lost %+v", v)
	}
	// The import plans.
	plan, err := planner.Consolidate(imp.Snapshot, planner.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if plan.HostsAfter != 1 || len(plan.Unplaced) != 0 || plan.HostsBefore != 2 {
		t.Fatalf("plan: before %d after %d unplaced %v", plan.HostsBefore, plan.HostsAfter, plan.Unplaced)
	}

	withOff, err := Read(context.Background(), workbook(t, goodBook()), Options{IncludePoweredOff: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(withOff.Snapshot.VMs) != 5 || withOff.PoweredOff != 0 {
		t.Fatalf("include powered off: %d VMs", len(withOff.Snapshot.VMs))
	}
}

func TestReadWithoutDemandSheets(t *testing.T) {
	b := goodBook()
	delete(b, SheetCPU)
	delete(b, SheetMemory)
	imp, err := Read(context.Background(), workbook(t, b), Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range imp.Snapshot.VMs {
		if v.Demand != nil {
			t.Fatalf("%s has a demand without vCPU and vMemory", v.Name)
		}
	}
	if len(imp.Warnings) != 3 {
		t.Fatalf("warnings %v", imp.Warnings)
	}
}

func TestMalformedWorkbookNamesSheetAndCell(t *testing.T) {
	cases := []struct {
		name        string
		edit        func(book)
		sheet, cell string
		says        string
	}{
		{"no vHost", func(b book) { delete(b, SheetHost) }, SheetHost, "", "missing"},
		{"no vInfo", func(b book) { delete(b, SheetInfo) }, SheetInfo, "", "missing"},
		{"bad CPUs", func(b book) { b[SheetInfo][2][6] = "four" }, SheetInfo, "G3", "not a number"},
		{"bad unit", func(b book) { b[SheetInfo][1][7] = "8 parsecs" }, SheetInfo, "H2", "unknown unit"},
		{"negative", func(b book) { b[SheetInfo][1][7] = "-8" }, SheetInfo, "H2", "negative"},
		{"empty CPUs", func(b book) { b[SheetInfo][3][6] = "" }, SheetInfo, "G4", "no CPU count"},
		{"bad overall", func(b book) { b[SheetCPU][1][7] = "lots" }, SheetCPU, "H2", "not a number"},
		{"bad consumed", func(b book) { b[SheetMemory][2][7] = "1.2.3.4.5" }, SheetMemory, "H3", "not a number"},
		{"no cores", func(b book) { b[SheetHost][2][11] = "" }, SheetHost, "L3", "no core count"},
		{"bad maintenance", func(b book) { b[SheetHost][1][4] = "perhaps" }, SheetHost, "E2", "true or false"},
		{"duplicate host", func(b book) { b[SheetHost][2][0] = "esx1" }, SheetHost, "A3", "appears twice"},
		{"duplicate vm", func(b book) { b[SheetInfo][2][0] = "web1" }, SheetInfo, "A3", "appears twice"},
		{"vm without name", func(b book) { b[SheetInfo][2][0] = "" }, SheetInfo, "A3", "without a VM name"},
		{"no memory column", func(b book) { b[SheetInfo][0][7] = "Mem" }, SheetInfo, "row 1", `no column "Memory"`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := goodBook()
			c.edit(b)
			_, err := Read(context.Background(), workbook(t, b), Options{})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %v, want an *Error", err)
			}
			if e.Sheet != c.sheet || e.Cell != c.cell || !strings.Contains(e.Message, c.says) {
				t.Fatalf("got %q (sheet %q cell %q), want sheet %q cell %q saying %q", err, e.Sheet, e.Cell, c.sheet, c.cell, c.says)
			}
		})
	}
	if _, err := Read(context.Background(), strings.NewReader("not a workbook"), Options{}); err == nil || !strings.Contains(err.Error(), "opening the workbook") {
		t.Fatalf("a non-workbook: %v", err)
	}
}

func TestParseQuantity(t *testing.T) {
	for _, c := range []struct {
		in    string
		units map[string]float64
		want  float64
	}{
		{"4096", mibUnits, 4096}, {"4,096", mibUnits, 4096}, {"1.048.576", mibUnits, 1048576},
		{"8 GB", mibUnits, 8192}, {"1.5GiB", mibUnits, 1536}, {"1,5 GB", mibUnits, 1536},
		{"2 TB", mibUnits, 2 << 20}, {"1.024,5", mibUnits, 1024.5}, {"1,024.5", mibUnits, 1024.5},
		{"2.6 GHz", mhzUnits, 2600}, {"2600", mhzUnits, 2600}, {"12 345", mhzUnits, 12345}, {"4", countUnits, 4},
	} {
		got, err := parseQuantity(c.in, c.units)
		if err != nil || got != c.want {
			t.Errorf("%q: %v %v, want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "GB", "1,2,3", "4 cores", "NaN", "1e400"} {
		if _, err := parseQuantity(bad, mibUnits); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}
