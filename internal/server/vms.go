package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/scheduler"
	"github.com/polyvisor/polyvisor/internal/store"
)

func (s *Server) vmRoutes() []route {
	return []route{
		{"GET", "/v1/vms", auth.Admin, s.listVMs},
		{"POST", "/v1/vms", auth.Admin, s.createVM},
		{"GET", "/v1/vms/{name}", auth.Admin, s.getVM},
		{"DELETE", "/v1/vms/{name}", auth.Admin, s.deleteVM},
		{"POST", "/v1/vms/{name}/start", auth.Admin, s.vmActionHandler(api.ActionStart)},
		{"POST", "/v1/vms/{name}/stop", auth.Admin, s.vmActionHandler(api.ActionStop)},
		{"POST", "/v1/vms/{name}/restart", auth.Admin, s.vmActionHandler(api.ActionRestart)},
		{"POST", "/v1/vms/{name}/pause", auth.Admin, s.vmActionHandler(api.ActionPause)},
		{"POST", "/v1/vms/{name}/resume", auth.Admin, s.vmActionHandler(api.ActionResume)},
		{"GET", "/v1/vms/{name}/console", auth.Admin, s.vmConsole},
		{"GET", "/v1/vms/{name}/console/log", auth.Admin, s.vmConsoleLog},
	}
}

func (s *Server) listVMs(w http.ResponseWriter, r *http.Request) {
	serveList(s, w, r, s.vms, func(q listQuery, vm *api.VM) bool {
		return (q.Host == "" || vm.Spec.Host == q.Host) &&
			(q.State == "" || vm.Status.PowerState == q.State) &&
			providerMatches(q.Provider, vm.Spec.Provider) && q.sel.Matches(vm.Labels)
	}, nil)
}

func (s *Server) getVM(w http.ResponseWriter, r *http.Request) {
	vm, ok := s.vms.Get(r.PathValue("name"))
	if !ok {
		s.writeError(w, r, api.NotFound("vm", r.PathValue("name")))
		return
	}
	w.Header().Set("ETag", strconv.Quote(strconv.FormatInt(vm.Version, 10)))
	writeJSON(w, http.StatusOK, vm)
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
// first request made. Records are kept for idempotencyTTL.
type idempotencyRecord struct {
	Name        string    `json:"name"`
	Version     int64     `json:"-"`
	OperationID string    `json:"operationId"`
	CreatedAt   time.Time `json:"createdAt"`
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
	op, err := s.doCreateVM(r.Context(), &req, key)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeOperation(w, op)
}

// idempotentOp returns the operation an earlier request with key made.
func (s *Server) idempotentOp(key string) (*api.Operation, bool) {
	rec, ok := s.idem.Get(idempotencyName(key))
	if !ok {
		return nil, false
	}
	return s.ops.Get(rec.OperationID)
}

func (s *Server) doCreateVM(ctx context.Context, req *api.VMCreate, idemKey string) (*api.Operation, error) {
	// Creates of one name serialize, so a retried create finds the first
	// one's record or its VM, never half of it.
	unlock := s.opctl.lockVM(req.Name)
	defer unlock()
	if idemKey != "" {
		if op, ok := s.idempotentOp(idemKey); ok {
			return op, nil
		}
	}
	filter := hostFilter(ownHosts)
	var ref *api.ProviderRef
	if req.Provider != "" || req.Template != "" || req.Cluster != "" || req.Datastore != "" {
		var err error
		if ref, filter, err = s.validateProviderCreate(req); err != nil {
			return nil, err
		}
	} else if err := validateVMCreate(req, s.readyImage, s.place.limits(filter)); err != nil {
		return nil, err
	}
	if _, exists := s.vms.Get(req.Name); exists {
		return nil, api.Conflict("vm %q already exists", req.Name)
	}
	for i := range req.NICs {
		if req.NICs[i].MAC == "" {
			req.NICs[i].MAC = randomMAC()
		}
	}
	host, release, err := s.place.place(ctx, req.Name, scheduler.Request{VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB, Host: req.Host}, filter)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC()
	vm := &api.VM{
		Meta: api.Meta{Name: req.Name, UID: newUID(), Labels: req.Labels, Generation: 1, CreatedAt: now, UpdatedAt: now},
		Spec: api.VMSpec{
			Host: host, VCPUs: req.VCPUs, MemoryMiB: req.MemoryMiB, Disks: req.Disks, NICs: req.NICs,
			Boot: req.Boot, CloudInit: req.CloudInit, PowerState: req.PowerState,
			StopTimeoutSeconds: req.StopTimeoutSeconds, Provider: ref,
		},
		Status: api.VMStatus{PowerState: api.PowerPending},
	}
	op := newOperation(api.OpVMCreate, api.Ref{Kind: "vm", Name: vm.Name, UID: vm.UID}, nil)
	op.Status, op.StartedAt, op.TargetGeneration = api.OpRunning, now, 1
	op.Deadline = now.Add(deadlineFor(op.Kind, vm))
	op.Progress = 10
	op.Message = "placed on host " + host

	txn := []store.Op{s.vms.OpCreate(vm.Name, vm), s.ops.OpCreate(op.ID, op)}
	if idemKey != "" {
		txn = append(txn, s.idem.OpCreate(idempotencyName(idemKey), &idempotencyRecord{Name: idempotencyName(idemKey), OperationID: op.ID, CreatedAt: now}))
	}
	if _, err := s.st.Txn(ctx, txn...); err != nil {
		release(false)
		var ke *store.KeyError
		if idemKey != "" {
			if prev, ok := s.idempotentOp(idemKey); ok {
				return prev, nil
			}
		}
		if errors.As(err, &ke) && ke.Kind == "vms" && errors.Is(err, store.ErrExists) {
			return nil, api.Conflict("vm %q already exists", vm.Name)
		}
		return nil, fmt.Errorf("storing vm %q: %w", vm.Name, err)
	}
	release(true)
	s.opctl.addActiveLocked(vm.Name, op.ID)
	s.metrics.opStarted(op.Kind)
	return op, nil
}

// readyImage looks an image up by name for validation.
func (s *Server) readyImage(name string) (*api.Image, bool) { return s.images.Get(name) }

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
	op, err := s.opctl.submit(r.Context(), r.PathValue("name"), api.OpVMDelete, map[string]bool{"keepDisks": keep}, ifMatch)
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
		op, err := s.opctl.submit(r.Context(), r.PathValue("name"), kind, params, ifMatch)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		writeOperation(w, op)
	}
}

func newUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// randomMAC returns a locally administered unicast MAC in QEMU's 52:54:00
// range.
func randomMAC() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return net.HardwareAddr{0x52, 0x54, 0x00, b[0], b[1], b[2]}.String()
}
