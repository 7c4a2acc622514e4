package server

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/rvtools/rvtoolstest"
	"github.com/polyvisor/polyvisor/internal/scheduler"
)

// TestPlansOverTheLiveEstate plans the server's own hosts and VMs: sized by
// allocation, the anti-affinity label kept, cordons kept, and a what-if
// that removes a host.
func TestPlansOverTheLiveEstate(t *testing.T) {
	// No overcommit and no reservation: the env's hosts offer 64 cores
	// and 256 GiB each.
	e := newEnv(t, Config{Scheduler: scheduler.Config{CPUOvercommit: 1, MemoryOvercommit: 1, ReservedMemoryMiB: -1}})
	ctx := context.Background()
	pa := e.super.WithProject("pa")
	mk := func(name, host string, vcpus int, labels map[string]string) {
		t.Helper()
		if _, err := pa.CreateVM(ctx, api.VMCreate{Name: name, VCPUs: vcpus, MemoryMiB: 32 << 10, Host: host, Labels: labels,
			Disks: []api.Disk{{Image: "img"}}, PowerState: api.PowerStopped}, client.CreateOptions{}); err != nil {
			t.Fatalf("creating %s: %v", name, err)
		}
	}
	mk("a", "h1", 8, nil)
	mk("b", "h1", 8, nil)
	mk("c", "h2", 8, nil)

	full := api.PlanRequest{Options: api.PlanOptions{TargetUtilization: 1}}
	p, err := e.super.PlanConsolidate(ctx, full, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != api.PlanSourceEstate || p.HostsBefore != 2 || p.HostsAfter != 1 || len(p.Moves) != 1 || p.Moves[0] != (api.PlanMove{VM: "pa/c", From: "h2", To: "h1"}) {
		t.Fatalf("plan: %+v", p)
	}
	if p.Savings.Hosts != 1 || len(p.Savings.Freed) != 1 || p.Savings.Freed[0] != "h2" || p.Savings.CPUs != 64 {
		t.Fatalf("savings %+v", p.Savings)
	}
	if len(p.Warnings) == 0 || !strings.Contains(p.Warnings[0], "sized by their allocation") {
		t.Fatalf("warnings %v", p.Warnings)
	}

	// Anti-affinity between two new VMs keeps two hosts, where one
	// would hold the 40 cores.
	mk("d", "h2", 8, map[string]string{LabelPlanAntiAffinity: "db"})
	mk("e", "h1", 8, map[string]string{LabelPlanAntiAffinity: "db"})
	p, err = e.super.PlanConsolidate(ctx, full, nil)
	if err != nil {
		t.Fatal(err)
	}
	where := map[string]string{}
	for _, as := range p.Placement {
		where[as.VM] = as.Host
	}
	if p.HostsAfter != 2 || where["pa/e"] == where["pa/d"] {
		t.Fatalf("anti-affinity: %d hosts, placement %v", p.HostsAfter, where)
	}

	// Without h2, d has nowhere to go; with a new host it fits.
	w, err := e.super.PlanWhatIf(ctx, api.PlanRequest{Options: full.Options, Change: &api.PlanChange{RemoveHosts: []string{"h2"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if w.Fits || len(w.After.Unplaced) != 1 {
		t.Fatalf("what-if without h2: fits %v unplaced %v", w.Fits, w.After.Unplaced)
	}
	w, err = e.super.PlanWhatIf(ctx, api.PlanRequest{Options: full.Options, Change: &api.PlanChange{
		RemoveHosts: []string{"h2"}, AddHosts: []api.PlanHostShape{{Count: 1, CPUs: 32, MemoryMiB: 64 << 10}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !w.Fits || len(w.Added) != 1 {
		t.Fatalf("what-if with a new host: fits %v added %v unplaced %v", w.Fits, w.Added, w.After.Unplaced)
	}

	f, err := e.super.PlanForecast(ctx, api.PlanRequest{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The env's own VMs count too: the forecast's demand is the plan's.
	var cores float64
	for _, as := range p.Placement {
		cores += as.Size.CPU
	}
	if len(f.Clusters) != 1 || f.Clusters[0].VMs != len(p.Placement) || f.Clusters[0].CPU.Now != cores || cores < 40 ||
		f.Clusters[0].CPU.Capacity != 128 || f.Clusters[0].RunsOutAt != nil {
		t.Fatalf("forecast %+v", f)
	}

	// Bad input names the field.
	_, err = e.super.PlanConsolidate(ctx, api.PlanRequest{Options: api.PlanOptions{TargetUtilization: 2}}, nil)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeInvalid || ae.Field != "targetUtilization" {
		t.Fatalf("target 2: %v", err)
	}
	_, err = e.super.PlanWhatIf(ctx, api.PlanRequest{Change: &api.PlanChange{RemoveHosts: []string{"h9"}}}, nil)
	if !errors.As(err, &ae) || ae.Field != "removeHosts[0]" {
		t.Fatalf("removing a host that is not there: %v", err)
	}
	if _, err = e.super.PlanWhatIf(ctx, api.PlanRequest{}, nil); !errors.As(err, &ae) || ae.Field != "change" {
		t.Fatalf("what-if without a change: %v", err)
	}
}

// TestPlansOverAnRVToolsWorkbook uploads a workbook and a malformed one.
func TestPlansOverAnRVToolsWorkbook(t *testing.T) {
	e := newEnv(t, Config{})
	ctx := context.Background()
	book := rvtoolstest.Book{
		"vInfo": {rvtoolstest.InfoHeader,
			rvtoolstest.Info("web1", "poweredOn", "False", 8, "16 GB", "esx1"),
			rvtoolstest.Info("web2", "poweredOn", "False", 8, "16 GB", "esx2"),
			rvtoolstest.Info("old", "poweredOff", "False", 8, 8192, "esx2"),
		},
		"vCPU":    {rvtoolstest.CPUHeader, rvtoolstest.CPU("web1", 5200), rvtoolstest.CPU("web2", "")},
		"vMemory": {rvtoolstest.MemHeader, rvtoolstest.Memory("web1", 8192)},
		"vHost": {rvtoolstest.HostHeader,
			rvtoolstest.Host("esx1", "prod", "False", 2600, 40, "384 GB"),
			rvtoolstest.Host("esx2", "prod", "False", 2600, 40, 393216),
		},
	}
	wb, err := book.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.super.PlanConsolidate(ctx, api.PlanRequest{}, wb)
	if err != nil {
		t.Fatal(err)
	}
	if p.Source != api.PlanSourceRVTools || p.HostsBefore != 2 || p.HostsAfter != 1 || len(p.Placement) != 2 {
		t.Fatalf("plan %+v", p)
	}
	sizes := map[string]api.PlanAssignment{}
	for _, as := range p.Placement {
		sizes[as.VM] = as
	}
	// web1: 5200 MHz over 2600 MHz cores is 2 cores, 8 GiB consumed.
	if s := sizes["web1"]; s.Source != "demand" || s.Size != (api.PlanUsage{CPU: 2, MemoryMiB: 8192}) {
		t.Fatalf("web1 %+v", s)
	}
	if !strings.Contains(strings.Join(p.Warnings, ";"), "1 powered-off") {
		t.Fatalf("warnings %v", p.Warnings)
	}
	p, err = e.super.PlanConsolidate(ctx, api.PlanRequest{IncludePoweredOff: true}, wb)
	if err != nil || len(p.Placement) != 3 {
		t.Fatalf("with powered-off VMs: %v %+v", err, p)
	}
	w, err := e.super.PlanWhatIf(ctx, api.PlanRequest{Change: &api.PlanChange{GrowPercent: 50}}, wb)
	if err != nil || !w.Fits || w.Source != api.PlanSourceRVTools {
		t.Fatalf("what-if: %v %+v", err, w)
	}
	f, err := e.super.PlanForecast(ctx, api.PlanRequest{}, wb)
	if err != nil || len(f.Clusters) != 1 || f.Clusters[0].Cluster != "prod" || f.Clusters[0].Hosts != 2 {
		t.Fatalf("forecast: %v %+v", err, f)
	}

	book["vInfo"][2][6] = "eight"
	bad, err := book.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.super.PlanConsolidate(ctx, api.PlanRequest{}, bad)
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeInvalid || ae.Details["sheet"] != "vInfo" || ae.Details["cell"] != "G3" || !strings.Contains(ae.Message, "not a number") {
		t.Fatalf("malformed workbook: %v (%+v)", err, ae)
	}
	if _, err = e.super.PlanConsolidate(ctx, api.PlanRequest{}, []byte("not a workbook")); !errors.As(err, &ae) || ae.Field != "rvtools" {
		t.Fatalf("not a workbook: %v", err)
	}
	// Viewers may not plan.
	if _, err := e.as("viewer", "pa").PlanConsolidate(ctx, api.PlanRequest{}, wb); !errors.As(err, &ae) || ae.Code != api.CodeForbidden {
		t.Fatalf("a viewer planned: %v", err)
	}

	// One workbook is read at a time: while one is, another is answered
	// 503 at once, and the live estate can still be planned.
	release, err := e.s.workbooks.Enter(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.super.PlanConsolidate(ctx, api.PlanRequest{}, wb)
	if !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || !strings.Contains(ae.Message, "another RVTools workbook") {
		t.Fatalf("a second workbook at once: %v", err)
	}
	if _, err := e.super.PlanConsolidate(ctx, api.PlanRequest{}, nil); err != nil {
		t.Fatalf("the live estate while a workbook is read: %v", err)
	}
	release()
	if _, err := e.super.PlanConsolidate(ctx, api.PlanRequest{}, wb); err != nil {
		t.Fatalf("a workbook once the slot is free: %v", err)
	}
}
