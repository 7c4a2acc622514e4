package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/planner"
	"github.com/polyvisor/polyvisor/internal/rvtools"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/throttle"
)

// maxWorkbookBytes bounds an uploaded RVTools workbook (zipped); its
// unzipped size has its own bound (rvtools.MaxUnzippedBytes).
const maxWorkbookBytes = 64 << 20

// workbookSlots is how many workbooks are uploaded and read at once: each
// holds up to maxWorkbookBytes and its unzipped sheets while it is read. A
// workbook finding no slot free is answered 503 with Retry-After.
const workbookSlots = 1

// errWorkbookBusy answers a workbook that found every slot taken.
var errWorkbookBusy = &api.Error{Code: api.CodeUnavailable,
	Message: "another RVTools workbook is being read; try again in a second"}

func (s *Server) planRoutes() []route {
	// A plan lists every host and every project's VMs, and a workbook is a
	// large upload to parse: planning belongs to the installation's
	// superadmins. Plans change nothing.
	return []route{
		{method: "POST", path: "/v1/plans/consolidate", rule: auth.Superadmin, handler: s.planConsolidate},
		{method: "POST", path: "/v1/plans/what-if", rule: auth.Superadmin, handler: s.planWhatIf},
		{method: "POST", path: "/v1/plans/forecast", rule: auth.Superadmin, handler: s.planForecast},
	}
}

// planInput is what a plan request asks about.
type planInput struct {
	req      api.PlanRequest
	snap     planner.Snapshot
	source   string
	warnings []string
}

func (s *Server) planConsolidate(w http.ResponseWriter, r *http.Request) {
	in, err := s.readPlanInput(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if in.req.Change != nil {
		s.writeError(w, r, api.Invalid("change", "applies to what-if plans only"))
		return
	}
	plan, err := planner.Consolidate(in.snap, in.req.Options)
	if err != nil {
		s.writeError(w, r, planError(err))
		return
	}
	plan.Source, plan.Warnings = in.source, in.warnings
	writeJSON(w, http.StatusOK, plan)
}

func (s *Server) planWhatIf(w http.ResponseWriter, r *http.Request) {
	in, err := s.readPlanInput(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if in.req.Change == nil {
		s.writeError(w, r, api.Invalid("change", "a what-if needs a change: hosts to add or remove, or a growth"))
		return
	}
	res, err := planner.WhatIf(in.snap, *in.req.Change, in.req.Options)
	if err != nil {
		s.writeError(w, r, planError(err))
		return
	}
	res.Source, res.Warnings = in.source, in.warnings
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) planForecast(w http.ResponseWriter, r *http.Request) {
	in, err := s.readPlanInput(w, r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if in.req.Change != nil {
		s.writeError(w, r, api.Invalid("change", "applies to what-if plans only"))
		return
	}
	clusters, err := planner.Forecast(in.snap, in.req.Options)
	if err != nil {
		s.writeError(w, r, planError(err))
		return
	}
	opts := in.req.Options
	if opts.TargetUtilization == 0 {
		opts.TargetUtilization = 1
	}
	if opts.Percentile == 0 {
		opts.Percentile = planner.DefaultPercentile
	}
	if clusters == nil {
		clusters = []api.ClusterForecast{}
	}
	writeJSON(w, http.StatusOK, api.Forecast{Source: in.source, Warnings: in.warnings, Options: opts, Clusters: clusters})
}

// planError maps the planner's and the import's errors to the API's.
func planError(err error) error {
	var ie *planner.InputError
	if errors.As(err, &ie) {
		return api.Invalid(ie.Field, "%s", ie.Message)
	}
	var re *rvtools.Error
	if errors.As(err, &re) {
		d := map[string]string{"sheet": re.Sheet}
		if re.Cell != "" {
			d["cell"] = re.Cell
		}
		return &api.Error{Code: api.CodeInvalid, Field: "rvtools", Message: "the RVTools workbook: " + re.Error(), Details: d}
	}
	return err
}

// readPlanInput reads a plan request: a JSON body (or none) plans the
// live estate; a multipart/form-data body plans the RVTools workbook in
// its "rvtools" part, with the JSON request in its "request" part.
func (s *Server) readPlanInput(w http.ResponseWriter, r *http.Request) (*planInput, error) {
	in := &planInput{}
	mt, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "multipart/form-data" {
		if err := decodeJSON(w, r, &in.req, true); err != nil {
			return nil, err
		}
		in.snap, in.warnings = s.estateSnapshot(r.Context())
		in.source = api.PlanSourceEstate
		return in, nil
	}
	if params["boundary"] == "" {
		return nil, api.Invalid("body", "multipart body without a boundary")
	}
	release, err := s.workbooks.Enter(r.Context())
	if errors.Is(err, throttle.ErrBusy) {
		return nil, errWorkbookBusy
	}
	if err != nil {
		return nil, err
	}
	defer release()
	r.Body = http.MaxBytesReader(w, r.Body, maxWorkbookBytes+maxBodyBytes)
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, api.Invalid("body", "reading the multipart body: %v", err)
	}
	var workbook []byte
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, multipartError(err)
		}
		switch part.FormName() {
		case "request":
			raw, err := readPart(part, maxBodyBytes, "the request part")
			if err != nil {
				return nil, err
			}
			if err := decodeStrict(raw, &in.req); err != nil {
				return nil, err
			}
		case "rvtools":
			if workbook != nil {
				return nil, api.Invalid("rvtools", "more than one workbook")
			}
			if workbook, err = readPart(part, maxWorkbookBytes, "the workbook"); err != nil {
				return nil, err
			}
		default:
			return nil, api.Invalid(part.FormName(), "unknown part %q: the parts are request and rvtools", part.FormName())
		}
	}
	if workbook == nil {
		return nil, api.Invalid("rvtools", "the multipart body has no rvtools part (the workbook)")
	}
	imp, err := rvtools.Read(r.Context(), bytes.NewReader(workbook), rvtools.Options{IncludePoweredOff: in.req.IncludePoweredOff})
	var re *rvtools.Error
	if errors.As(err, &re) {
		return nil, planError(err)
	}
	if err != nil {
		return nil, api.Invalid("rvtools", "the workbook cannot be read as an .xlsx file: %v", err)
	}
	in.snap, in.source = imp.Snapshot, api.PlanSourceRVTools
	in.warnings = imp.Warnings
	if imp.Templates > 0 || imp.PoweredOff > 0 {
		in.warnings = append(in.warnings, fmt.Sprintf("left out: %d templates, %d powered-off VMs", imp.Templates, imp.PoweredOff))
	}
	return in, nil
}

// readPart reads a multipart part of at most limit bytes.
func readPart(part io.Reader, limit int64, what string) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(part, limit+1))
	if err != nil {
		return nil, multipartError(err)
	}
	if int64(len(raw)) > limit {
		return nil, &api.Error{Code: api.CodeTooLarge, Message: fmt.Sprintf("%s is larger than %d bytes", what, limit)}
	}
	return raw, nil
}

// multipartError keeps a body over its limit a 413.
func multipartError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return err
	}
	return api.Invalid("body", "reading the multipart body: %v", err)
}

// decodeStrict decodes a JSON value as decodeJSON does a body.
func decodeStrict(raw []byte, v any) error {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return api.Invalid("request", "the request part holds more than one JSON value")
	}
	return checkBounds(v)
}

// Labels a VM of the live estate carries to constrain plans.
const (
	LabelPlanPinned       = "plan.polyvisor.io/pinned"        // "true": the VM stays on its host
	LabelPlanAffinity     = "plan.polyvisor.io/affinity"      // a group sharing one host
	LabelPlanAntiAffinity = "plan.polyvisor.io/anti-affinity" // a group whose VMs are kept apart
)

// estateSnapshot is the live estate as the planner sees it: Polyvisor's
// hosts and those of connected providers, with every VM not being
// deleted. Polyvisor's VMs carry their hosts' usage history (usage.go);
// VMs without one are sized by their allocation, under the scheduler's
// overcommit ratios.
func (s *Server) estateSnapshot(ctx context.Context) (planner.Snapshot, []string) {
	cfg := s.cfg.Scheduler
	cpuRatio, memRatio, reserved := cfg.CPUOvercommit, cfg.MemoryOvercommit, cfg.ReservedMemoryMiB
	if cpuRatio <= 0 {
		cpuRatio = scheduler.DefaultCPUOvercommit
	}
	if memRatio <= 0 {
		memRatio = scheduler.DefaultMemoryOvercommit
	}
	if reserved == 0 {
		reserved = scheduler.DefaultReservedMemoryMiB
	}
	reserved = max(reserved, 0)
	var snap planner.Snapshot
	vmsByHost := map[string][]string{}
	for _, v := range s.vms.Select(func(v *api.VM) bool { return v.Spec.Deletion == nil && v.Spec.Provider == nil && v.Spec.Host != "" }) {
		vmsByHost[v.Spec.Host] = append(vmsByHost[v.Spec.Host], v.UID)
	}
	for _, h := range s.hosts.Select(func(*api.Host) bool { return true }) {
		ph := planner.Host{
			Name: h.Name, CPUs: float64(h.Status.CPUs), MemoryMiB: float64(max(h.Status.MemoryMiB-reserved, 0)),
			CPUOvercommit: cpuRatio, MemoryOvercommit: memRatio, Labels: h.Labels,
			Cordoned: h.Spec.Unschedulable || h.Status.State != api.HostReady,
		}
		if h.Provider != nil {
			ph.Provider, ph.Cluster = h.Provider.Name, h.Provider.Cluster
			ph.Cordoned = h.Spec.Unschedulable // a provider's hosts have no heartbeat
		} else if h.Status.State != api.HostReady {
			delete(vmsByHost, h.Name) // its agent cannot answer
		}
		snap.Hosts = append(snap.Hosts, ph)
	}
	histories, warnings := s.planHistories(ctx, vmsByHost)
	warnings = append(warnings, s.providerPlanHistories(ctx, histories)...)
	unsized := 0
	for _, v := range s.vms.Select(func(v *api.VM) bool { return v.Spec.Deletion == nil }) {
		pv := planner.VM{
			Name: v.Key(), Host: v.Spec.Host, VCPUs: float64(v.Spec.VCPUs), MemoryMiB: float64(v.Spec.MemoryMiB),
			Pinned:   v.Labels[LabelPlanPinned] == "true" && v.Spec.Host != "",
			Affinity: v.Labels[LabelPlanAffinity],
		}
		if g := v.Labels[LabelPlanAntiAffinity]; g != "" {
			pv.AntiAffinity = []string{g}
		}
		if v.Spec.Provider != nil {
			pv.Provider = v.Spec.Provider.Name
		}
		pv.History = histories[v.UID]
		if pv.History == nil {
			unsized++
		}
		snap.VMs = append(snap.VMs, pv)
	}
	slices.Sort(warnings)
	if unsized > 0 {
		warnings = append(warnings, fmt.Sprintf("%d of %d vms have no usage history (new, on a host that did not answer, or a provider's not sampled yet): they are sized by their allocation", unsized, len(snap.VMs)))
	}
	return snap, warnings
}
