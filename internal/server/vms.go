package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/controller/admission"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
	"github.com/polyvisor/polyvisor/internal/controller/placement"
	"github.com/polyvisor/polyvisor/internal/controller/quota"
	"github.com/polyvisor/polyvisor/internal/network"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/store"
)

func (s *Server) vmRoutes() []route {
	return []route{
		{method: "GET", path: "/v1/vms", rule: auth.In(auth.PermVMRead), handler: s.listVMs},
		{method: "POST", path: "/v1/vms", rule: auth.In(auth.PermVMCreate), handler: s.createVM},
		{method: "GET", path: "/v1/vms/{name}", rule: auth.In(auth.PermVMRead), handler: s.getVM},
		{method: "DELETE", path: "/v1/vms/{name}", rule: auth.In(auth.PermVMDelete), handler: s.deleteVM},
		{method: "POST", path: "/v1/vms/{name}/start", rule: auth.In(auth.PermVMPower), handler: s.vmActionHandler(api.ActionStart)},
		{method: "POST", path: "/v1/vms/{name}/stop", rule: auth.In(auth.PermVMPower), handler: s.vmActionHandler(api.ActionStop)},
		{method: "POST", path: "/v1/vms/{name}/restart", rule: auth.In(auth.PermVMPower), handler: s.vmActionHandler(api.ActionRestart)},
		{method: "POST", path: "/v1/vms/{name}/pause", rule: auth.In(auth.PermVMPower), handler: s.vmActionHandler(api.ActionPause)},
		{method: "POST", path: "/v1/vms/{name}/resume", rule: auth.In(auth.PermVMPower), handler: s.vmActionHandler(api.ActionResume)},
		{method: "GET", path: "/v1/vms/{name}/console", rule: auth.In(auth.PermVMConsole), handler: s.vmConsole},
		{method: "GET", path: "/v1/vms/{name}/console/log", rule: auth.In(auth.PermVMConsole), handler: s.vmConsoleLog},
		{method: "PUT", path: "/v1/vms/{name}/lease", rule: auth.In(auth.PermVMUpdate), handler: s.setLease},
		{method: "GET", path: "/v1/vms/{name}/stats", rule: auth.In(auth.PermVMRead), handler: s.vmStats},
	}
}

func (s *Server) listVMs(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.vms, func(q listQuery, vm *api.VM) bool {
		return s.inProject(r, vm.Project, auth.PermVMRead) && (q.Host == "" || vm.Spec.Host == q.Host) &&
			(q.State == "" || vm.Status.PowerState == q.State) &&
			providerMatches(q.Provider, vm.Spec.Provider) && q.sel.Matches(vm.Labels)
	}, func(vm *api.VM) api.VM { return *s.vmView(r, vm) })
}

func (s *Server) getVM(w http.ResponseWriter, r *http.Request) {
	vm, ok := s.vmOf(w, r)
	if !ok {
		return
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(vm.Version, 10)))
	writeJSON(w, http.StatusOK, s.vmView(r, vm))
}

// ifMatchVersion reads the optional If-Match header: the VM version (its
// ETag) the client's action is based on.
func ifMatchVersion(r *http.Request) (int64, error) {
	v := r.Header.Get("If-Match")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.Trim(v, `" `), 10, 64)
	if err != nil || n <= 0 {
		return 0, api.Invalid("If-Match", "must be a version as in the ETag of GET /v1/vms/{name}, not %q", v)
	}
	return n, nil
}

// idempotencyRecord maps a client's Idempotency-Key to the operation its
// first request made, with the route and a hash of the body of that
// request: a retry must be the same request. Records are kept for
// idempotencyTTL.
type idempotencyRecord struct {
	Name        string    `json:"name"`
	Version     int64     `json:"-"`
	OperationID string    `json:"operationId"`
	CreatedAt   time.Time `json:"createdAt"`
	// Route is the first request's method and path pattern, BodyHash the
	// hex SHA-256 of its body as decoded and encoded again (so spacing and
	// the order of fields do not matter). Records written before these
	// were kept have neither, and match any request.
	Route    string `json:"route,omitempty"`
	BodyHash string `json:"bodyHash,omitempty"`
}

// idempotentRequest is what an Idempotency-Key stands for: the client's
// key (scoped to project and user), and the request it came with.
type idempotentRequest struct {
	key      string
	route    string
	bodyHash string
}

// newIdempotentRequest hashes the decoded body of a request with key.
func newIdempotentRequest(key, route string, body any) (idempotentRequest, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return idempotentRequest{}, fmt.Errorf("hashing the request body: %w", err)
	}
	sum := sha256.Sum256(b)
	return idempotentRequest{key: key, route: route, bodyHash: hex.EncodeToString(sum[:])}, nil
}

const idempotencyTTL = 24 * time.Hour

func idempotencyName(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func (s *Server) createVM(w http.ResponseWriter, r *http.Request) {
	var req api.VMCreate
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 {
		s.writeError(w, r, api.Invalid("Idempotency-Key", "is longer than 255 characters"))
		return
	}
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "vm", Name: req.Name, Project: rq.project}
	var idem idempotentRequest
	if key != "" {
		var err error
		if idem, err = newIdempotentRequest(key, "POST /v1/vms", &req); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	op, err := s.doCreateVM(r.Context(), rq.project, &req, idem)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeOperation(w, op)
}

// idempotentOp returns the operation an earlier request with the same
// key made, or a 422 error when that request was another one.
func (s *Server) idempotentOp(req idempotentRequest, key string) (*api.Operation, bool, error) {
	rec, ok := s.idem.Get(idempotencyName(key))
	if !ok {
		return nil, false, nil
	}
	mismatch := ""
	switch {
	case rec.Route != "" && rec.Route != req.route:
		mismatch = "route"
	case rec.BodyHash != "" && rec.BodyHash != req.bodyHash:
		mismatch = "body"
	}
	if mismatch != "" {
		return nil, false, &api.Error{Code: api.CodeUnprocessable, Field: "Idempotency-Key",
			Message: fmt.Sprintf("Idempotency-Key %q was first used with another request %s: a retry must repeat the request exactly; use a new key for a new request", req.key, mismatch),
			Details: map[string]string{"mismatch": mismatch, "operation": rec.OperationID}}
	}
	op, ok := s.ops.Get(rec.OperationID)
	return op, ok, nil
}

func (s *Server) doCreateVM(ctx context.Context, project string, req *api.VMCreate, idem idempotentRequest) (*api.Operation, error) {
	key := api.Key(project, req.Name)
	// Creates of one name serialize, so a retried create finds the first
	// one's record or its VM, never half of it.
	unlock := s.ctl.Ops.LockVM(key)
	defer unlock()
	idemKey := ""
	if idem.key != "" {
		idemKey = project + "\x00" + auth.FromContext(ctx).Name + "\x00" + idem.key
		if op, ok, err := s.idempotentOp(idem, idemKey); err != nil || ok {
			return op, err
		}
	}
	proj, ok := s.projects.Get(project)
	if !ok {
		return nil, api.NotFound("project", project)
	}
	filter := placement.Filter(placement.OwnHosts)
	var ref *api.ProviderRef
	if req.Provider != "" || req.Template != "" || req.Cluster != "" || req.Datastore != "" {
		var err error
		if ref, filter, err = s.validateProviderCreate(project, req); err != nil {
			return nil, err
		}
	} else if err := validateVMCreate(req, s.imageResolver(project), s.ownLimits()); err != nil {
		return nil, err
	}
	canonicalImages(req, s.imageResolver(project))
	root, err := s.planRootVolume(project, req)
	if err != nil {
		return nil, err
	}
	filter = root.filter(filter)
	lease, err := leaseFor(proj, req.LeaseSeconds, time.Now())
	if err != nil {
		return nil, err
	}
	ha, err := haOfCreate(req, proj)
	if err != nil {
		return nil, err
	}
	if ha, err = haOfRootVolume(req, root, ha); err != nil {
		return nil, err
	}
	if _, exists := s.vms.Get(key); exists {
		return nil, api.Conflict("vm %q already exists", req.Name)
	}
	for i := range req.NICs {
		if req.NICs[i].MAC == "" && (ref != nil || !network.Networked(req.NICs[i:i+1])) {
			req.NICs[i].MAC = randomMAC() // a port's MAC is its network's to give
		}
	}
	// The quota's check and the host's, and the write they admit, are one
	// step in etcd: the transaction holds the project's and the host's
	// admission records to the versions the checks decided from, and one
	// that lost a race to another admission decides again. The ports of
	// its NICs on networks, and the claims of their addresses, are in the
	// same transaction: the VM and its ports are made together or not at
	// all.
	portNICs := req.NICs
	if ref != nil {
		portNICs = nil // a provider's VM: its NICs are on the provider's networks
	}
	asks := quota.OfCreate(req, quota.ImageLookup(s.imageResolver(project)))
	asks.Ports = network.PortsMade(portNICs, 0)
	if root != nil {
		asks.VolumeMiB = root.sizeMiB
	}
	var op *api.Operation
	var refused error
	// The placement counts as in flight on this server until the
	// transaction returned (stored: the index has the VM; failed: it
	// holds nothing), so that creates made at once spread out.
	release := func() {}
	defer func() { release() }()
	attempt := 0
	err = s.txnWithPorts(ctx, project, key, portNICs, 0, nicField, func(plan *network.VMPlan) ([]store.Op, error) {
		release()
		release = func() {}
		attempt++
		conds, err := s.ctl.Quota.Admit(ctx, project, asks)
		if err != nil {
			refused = err
			return nil, err
		}
		sreq := scheduler.Request{VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB, Host: req.Host}
		if attempt > 1 {
			// It lost its host to a create decided at the same time,
			// likely through another server from the same state: choose
			// among a few of the best hosts, not the same one again.
			sreq.Choices, sreq.Seed = spreadChoices, mrand.Uint64()
		}
		host, placed, rel, err := s.ctl.Placer.Place(ctx, sreq, filter)
		if rel != nil {
			release = rel
		}
		if err != nil {
			refused = err
			return nil, err
		}
		now := time.Now().UTC()
		vm := &api.VM{
			Meta: api.Meta{Name: req.Name, Project: project, UID: api.NewUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
			Spec: api.VMSpec{
				Host: host, VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB, Disks: req.Disks, NICs: req.NICs,
				Boot: req.Boot, CloudInit: req.CloudInit, PowerState: req.PowerState,
				StopTimeoutSeconds: req.StopTimeoutSeconds, Provider: ref, Lease: lease,
				OnCrash: req.OnCrash, HA: ha, HASince: haSince(ha, 1),
			},
			Status: api.VMStatus{PowerState: api.PowerPending},
		}
		s.withPorts(vm, plan)
		var rootOps []store.Op
		if root != nil {
			var boot api.VolumeAttachment
			if rootOps, boot, err = s.rootVolumeOps(project, vm, root); err != nil {
				refused = err
				return nil, err
			}
			vm.Spec.Volumes = []api.VolumeAttachment{boot}
		}
		op = ops.NewOperation(api.OpVMCreate, api.Ref{Kind: "vm", Name: vm.Name, UID: vm.UID, Project: project}, nil)
		op.Status, op.StartedAt, op.TargetGeneration = api.OpRunning, now, 1
		op.Deadline = now.Add(ops.DeadlineFor(op.Kind, vm))
		op.Progress = 10
		op.Message = "placed on host " + host

		txn := []store.Op{s.vms.OpCreate(key, vm), s.ops.OpCreate(op.ID, op)}
		if idemKey != "" {
			txn = append(txn, s.idem.OpCreate(idempotencyName(idemKey), &ops.IdempotencyRecord{Name: idempotencyName(idemKey), OperationID: op.ID, CreatedAt: now,
				Route: idem.route, BodyHash: idem.bodyHash}))
		}
		return append(append(append(txn, conds...), placed...), rootOps...), nil
	})
	switch {
	case err == nil:
		s.metrics.OpStarted(op.Kind)
		s.auditRootVolume(ctx, project, req.Name, root, op.ID)
		return op, nil
	case refused != nil && errors.Is(err, refused):
		return nil, err
	}
	var ke *store.KeyError
	if idemKey != "" {
		if prev, ok, err := s.idempotentOp(idem, idemKey); err != nil || ok {
			return prev, err
		}
	}
	if errors.As(err, &ke) && ke.Kind == "vms" && errors.Is(err, store.ErrExists) {
		return nil, api.Conflict("vm %q already exists", req.Name)
	}
	if errors.As(err, &ke) && (ke.Kind == "volumes" || ke.Kind == "pools") {
		return nil, api.Conflict("the root volume or its pool changed while the vm was made: nothing was made, try again")
	}
	var ae *api.Error
	if errors.As(err, &ae) {
		return nil, err // the request's fault, told by its ports' plan
	}
	return nil, fmt.Errorf("storing vm %q: %w", req.Name, admission.Lost(err))
}

// spreadChoices is how many of the best hosts a create that lost its
// host to another chooses among.
const spreadChoices = 4

func (s *Server) deleteVM(w http.ResponseWriter, r *http.Request) {
	keep := false
	switch v := r.URL.Query().Get("keepDisks"); v {
	case "", "false", "0":
	case "true", "1":
		keep = true
	default:
		s.writeError(w, r, api.Invalid("keepDisks", "must be true or false, not %q", v))
		return
	}
	ifMatch, err := ifMatchVersion(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	op, err := s.ctl.Ops.Submit(r.Context(), s.vmKey(r), api.OpVMDelete, map[string]bool{"keepDisks": keep}, ifMatch)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeOperation(w, op)
}

// opKindOf maps a VM action to its operation kind.
var opKindOf = map[string]string{
	api.ActionStart:   api.OpVMStart,
	api.ActionStop:    api.OpVMStop,
	api.ActionRestart: api.OpVMRestart,
	api.ActionPause:   api.OpVMPause,
	api.ActionResume:  api.OpVMResume,
}

func (s *Server) vmActionHandler(action string) http.HandlerFunc {
	kind := opKindOf[action]
	return func(w http.ResponseWriter, r *http.Request) {
		var params any
		if action == api.ActionStop || action == api.ActionRestart {
			var stop api.VMStop
			if err := decodeJSON(w, r, &stop, true); err != nil {
				s.writeError(w, r, err)
				return
			}
			if stop.TimeoutSeconds < 0 || stop.TimeoutSeconds > maxStopTimeout {
				s.writeError(w, r, api.Invalid("timeoutSeconds", "must be from 0 to %d, not %d", maxStopTimeout, stop.TimeoutSeconds))
				return
			}
			params = stop
		} else if err := decodeJSON(w, r, new(struct{}), true); err != nil {
			s.writeError(w, r, err)
			return
		}
		ifMatch, err := ifMatchVersion(r)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		op, err := s.ctl.Ops.Submit(r.Context(), s.vmKey(r), kind, params, ifMatch)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeOperation(w, op)
	}
}

// randomMAC returns a locally administered unicast MAC in QEMU's 52:54:00
// range.
func randomMAC() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return net.HardwareAddr{0x52, 0x54, 0x00, b[0], b[1], b[2]}.String()
}

// vmKey is the store key of the VM the request's path names, in the
// request's project.
func (s *Server) vmKey(r *http.Request) string {
	return api.Key(requestOf(r).project, r.PathValue("name"))
}

// vmOf returns the VM the request's path names in the request's project,
// or writes a not-found error. A VM of another project does not exist for
// the request.
func (s *Server) vmOf(w http.ResponseWriter, r *http.Request) (*api.VM, bool) {
	vm, ok := s.vms.Get(s.vmKey(r))
	if !ok {
		s.writeError(w, r, api.NotFound("vm", r.PathValue("name")))
		return nil, false
	}
	return vm, true
}

// canonicalImages rewrites a create's image references to the images'
// keys ("<project>/<name>"), the form stored in the VM's spec.
func canonicalImages(req *api.VMCreate, lookup imageLookup) {
	canon := func(ref *string) {
		if *ref == "" {
			return
		}
		if img, ok := lookup(*ref); ok {
			*ref = img.Key()
		}
	}
	for i := range req.Disks {
		canon(&req.Disks[i].Image)
	}
	canon(&req.Boot.Kernel)
	canon(&req.Boot.Initrd)
}
