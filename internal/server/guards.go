package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/audit"
	"github.com/polyvisor/polyvisor/internal/diskspace"
	"github.com/polyvisor/polyvisor/internal/throttle"
)

// guards keep the server from doing what it cannot do safely: writing to a
// full disk, serving a flood from one address, or carrying out requests
// the audit log cannot record when it fails closed.
type guards struct {
	disk *diskspace.Guard
	addr atomic.Pointer[throttle.Limiter]

	mu        sync.Mutex
	readOnly  map[string]error // why the store is read-only, by source
	quota     *api.Alarm       // the store's database at its quota
	reclaimAt time.Time        // when the store's space was last reclaimed
	// reclaimEvery spaces the attempts: defragmenting stops etcd a while.
	reclaimEvery time.Duration

	auditErrAt   atomic.Int64 // when a failed audit write was last logged
	auditErrSkip atomic.Int64 // failed writes not logged since
}

// auditDir is where the audit log is kept.
func (s *Server) auditDir() string {
	if s.cfg.AuditDir != "" {
		return s.cfg.AuditDir
	}
	return filepath.Join(s.cfg.DataDir, "audit")
}

// setupGuards makes the guards, once the store and the audit log are open.
func (s *Server) setupGuards() {
	s.guards.readOnly = map[string]error{}
	s.guards.reclaimEvery = time.Minute
	s.auditFold = audit.NewAggregator(s.audit, s.cfg.AuditFold)
	s.guards.addr.Store(throttle.NewLimiter(s.cfg.AddressRateLimit, s.cfg.AddressRateBurst, 10*time.Minute))
	paths := []string{s.cfg.DataDir}
	if s.cfg.AuditDir != "" {
		paths = append(paths, s.cfg.AuditDir)
	}
	s.guards.disk = diskspace.NewGuard(s.cfg.MinFreeBytes, s.log.With("component", "disk"),
		func(err error) { s.setReadOnly(api.AlarmDiskFull, err) }, paths...)
	_ = s.guards.disk.Check()
	s.metrics.reg.MustRegister(&guardCollector{s: s})
}

// runGuards checks the disks and the store's space alarm every few
// seconds, so that the server goes read-only (and back) even while no
// request comes.
func (s *Server) runGuards(ctx context.Context) {
	t := time.NewTicker(2 * time.Second)
	defer t.Stop()
	for {
		_ = s.guards.disk.Check()
		s.checkStoreSpace(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// checkStoreSpace follows etcd's NOSPACE alarm: while it is raised the
// server is read-only, and the embedded etcd's space is reclaimed
// (compaction, defragmentation) until it takes writes again.
func (s *Server) checkStoreSpace(ctx context.Context) {
	on, err := s.st.SpaceAlarm(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("checking the store's space alarm", "err", err)
		}
		return
	}
	if on {
		on = s.reclaimStoreSpace(ctx)
	}
	g := &s.guards
	g.mu.Lock()
	was := g.quota != nil
	g.mu.Unlock()
	switch {
	case on && !was:
		a := &api.Alarm{Name: api.AlarmStoreQuota, Since: time.Now(), Path: filepath.Join(s.cfg.DataDir, "etcd"),
			Message: fmt.Sprintf("the store's database reached its quota (%s) and etcd refuses writes: changes are refused "+
				"while Polyvisor compacts and defragments it; if it stays full, its live data needs a larger quota", diskspace.Bytes(uint64(s.st.Quota())))}
		if len(s.cfg.EtcdEndpoints) > 0 {
			a.Path = ""
			a.Message = "the etcd cluster's database reached its quota and refuses writes: changes are refused until its operators compact, defragment and disarm it (etcdctl alarm disarm)"
		}
		s.log.Error("store at its quota: read-only", "alarm", a.Message)
		g.mu.Lock()
		g.quota = a
		g.mu.Unlock()
		s.setReadOnly(api.AlarmStoreQuota, errors.New(a.Message))
	case !on && was:
		s.log.Warn("store space reclaimed: writable again")
		g.mu.Lock()
		g.quota = nil
		g.mu.Unlock()
		s.setReadOnly(api.AlarmStoreQuota, nil)
	}
}

// reclaimStoreSpace tries to bring the embedded etcd under its quota, and
// reports whether its alarm is still raised.
func (s *Server) reclaimStoreSpace(ctx context.Context) bool {
	if len(s.cfg.EtcdEndpoints) > 0 {
		return true
	}
	g := &s.guards
	g.mu.Lock()
	due := time.Since(g.reclaimAt) >= g.reclaimEvery
	if due {
		g.reclaimAt = time.Now()
	}
	g.mu.Unlock()
	if !due {
		return true
	}
	ok, size, err := s.st.ReclaimSpace(ctx)
	if err != nil {
		s.log.Warn("reclaiming the store's space", "err", err)
		return true
	}
	if !ok {
		s.log.Warn("the store's database is still near its quota after compaction", "bytes", size, "quota", s.st.Quota())
	}
	return !ok
}

// setReadOnly sets or clears (err nil) one reason for the store to refuse
// writes; it takes writes again once no reason is left.
func (s *Server) setReadOnly(source string, err error) {
	g := &s.guards
	g.mu.Lock()
	defer g.mu.Unlock()
	if err == nil {
		delete(g.readOnly, source)
	} else {
		g.readOnly[source] = err
	}
	errs := make([]error, 0, len(g.readOnly))
	for _, e := range g.readOnly {
		errs = append(errs, e)
	}
	s.st.SetReadOnly(errors.Join(errs...))
}

// admit refuses what the server cannot carry out safely now: a change
// while the data disk is full or the store at its quota, and an audited
// request while the audit log cannot record it and the server fails
// closed. The routes that take access away or free space are let through
// all the same (see reliefRoutes): wrap keeps admit's answer for them as
// the request's restriction.
func (s *Server) admit(rt route, action string) error {
	if rt.method != http.MethodGet {
		if err := s.guards.disk.Check(); err != nil {
			return &api.Error{Code: api.CodeInsufficientStorage, Message: err.Error()}
		}
		if a := s.quotaAlarm(); a != nil {
			return &api.Error{Code: api.CodeInsufficientStorage, Message: a.Message}
		}
	}
	if s.cfg.AuditFailClosed && audited(rt, action) {
		if err := s.audit.Writable(); err != nil {
			return &api.Error{Code: api.CodeUnavailable, Message: fmt.Sprintf(
				"the audit log cannot record this request (%v); the server fails closed (--audit-fail-closed): "+
					"changes are refused until records can be written; revocations and deletions still go through", err)}
		}
	}
	return nil
}

// reliefRoutes take access away or free space: revoking tokens and hosts,
// ending sessions, disabling and deleting users, removing members, and
// deleting what takes room. They go through while other changes are
// refused (a full data disk, the store at its quota, an audit log that
// cannot write when the server fails closed), so that an operator can
// always cut an intruder off and make room: their store writes use the
// disk's reserve (store.UseReserve), and their audit records are kept in
// memory through an audit outage (appendAuditKept). PATCH of a user goes
// through only to disable or demote it (updateUser). Under etcd's own
// quota only deletions land: etcd refuses the rest until space is
// reclaimed.
var reliefRoutes = map[string]bool{
	"DELETE /v1/tokens/{id}":                       true,
	"POST /v1/logout":                              true,
	"PATCH /v1/users/{user}":                       true,
	"DELETE /v1/users/{user}":                      true,
	"DELETE /v1/projects/{project}/members/{user}": true,
	"POST /v1/hosts/{name}/revoke":                 true,
	"DELETE /v1/hosts/{name}":                      true,
	"DELETE /v1/vms/{name}":                        true,
	"DELETE /v1/vms/{name}/snapshots/{snapshot}":   true,
	"DELETE /v1/images/{name}":                     true,
	"DELETE /v1/projects/{project}":                true,
	"DELETE /v1/providers/{name}":                  true,
	// The agent's word that a VM being deleted is gone from its host.
	"POST /v1/agent/vms/{project}/{name}/removed": true,
}

// relief tells whether the route takes access away or frees space.
func (rt route) relief() bool { return reliefRoutes[rt.method+" "+rt.path] }

func (s *Server) quotaAlarm() *api.Alarm {
	s.guards.mu.Lock()
	defer s.guards.mu.Unlock()
	return s.guards.quota
}

// diskCause adds to an error met while starting what the disk of the data
// dir says, when it is full.
func (s *Server) diskCause(err error) error {
	u, serr := diskspace.Stat(s.cfg.DataDir)
	if serr != nil {
		return err
	}
	if errors.Is(err, syscall.ENOSPC) || u.Free < max(s.cfg.MinFreeBytes, 1<<20) {
		return fmt.Errorf("%w (the disk holding %s has %s free of %s: free space there and start the server again)",
			err, s.cfg.DataDir, diskspace.Bytes(u.Free), diskspace.Bytes(u.Total))
	}
	return err
}

// rateLimitAddress refuses a request over its client address's rate. It
// runs before authentication, so that requests with bad tokens are limited
// too; the unix socket is not limited.
func (s *Server) rateLimitAddress(w http.ResponseWriter, r *http.Request) error {
	key := addressKey(r)
	if key == "unix" {
		return nil
	}
	ok, wait := s.guards.addr.Load().Allow("addr:" + key)
	if ok {
		return nil
	}
	writeRetryAfter(w, wait)
	return &api.Error{Code: api.CodeTooManyRequests, Message: fmt.Sprintf("too many requests from this address; retry in %s", roundUp(wait))}
}

// addressKey is the client address requests are counted by: see
// addressOf.
func addressKey(r *http.Request) string { return addressOf(r.RemoteAddr) }

// addressOf is the one key of a client address, for every limit kept per
// address (requests, logins, connections, audit folding): the IP, or for
// IPv6 its /64, which one client usually holds whole; "unix" for the unix
// socket.
func addressOf(remote string) string {
	host, _, err := net.SplitHostPort(remote)
	if err != nil || host == "" {
		if remote == "" || remote == "@" {
			return "unix"
		}
		host = remote
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return ip.String()
}

// alarms are every condition that needs an operator now.
func (s *Server) alarms() []api.Alarm {
	out := s.audit.Alarms()
	if a := s.guards.disk.Alarm(); a != nil {
		out = append(out, *a)
	}
	if a := s.quotaAlarm(); a != nil {
		out = append(out, *a)
	}
	if out == nil {
		out = []api.Alarm{}
	}
	return out
}

func (s *Server) listAlarms(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, api.List[api.Alarm]{Items: s.alarms()})
}

var (
	descAlarm         = prometheus.NewDesc("polyvisor_alarm", "1 while the alarm is raised (see GET /v1/alarms).", []string{"name"}, nil)
	descAuditBytes    = prometheus.NewDesc("polyvisor_audit_bytes", "Size of the audit log's segments.", nil, nil)
	descAuditMaxBytes = prometheus.NewDesc("polyvisor_audit_max_bytes", "The audit log's size limit (an alarm past it; records younger than the age limit are kept).", nil, nil)
	descAuditWritable = prometheus.NewDesc("polyvisor_audit_writable", "1 while audit records can be written.", nil, nil)
	descAuditLost     = prometheus.NewDesc("polyvisor_audit_lost_records", "Audit records not written since the log last could write.", nil, nil)
	descAuditFolded   = prometheus.NewDesc("polyvisor_audit_folded_records_total", "Repeated refusals and failures counted into one audit record rather than written one by one.", nil, nil)
	descAuditScanned  = prometheus.NewDesc("polyvisor_audit_query_bytes_total", "Bytes of the audit log read by queries.", nil, nil)
)

// alarmNames are the alarms the metrics report, raised or not.
var alarmNames = []string{api.AlarmAuditFull, api.AlarmAuditWrite, api.AlarmAuditCorrupt, api.AlarmDiskFull, api.AlarmStoreQuota}

// guardCollector reports alarms and the audit log's state at scrape time.
type guardCollector struct{ s *Server }

func (c *guardCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAlarm, descAuditBytes, descAuditMaxBytes, descAuditWritable, descAuditLost, descAuditFolded, descAuditScanned} {
		ch <- d
	}
}

func (c *guardCollector) Collect(ch chan<- prometheus.Metric) {
	raised := map[string]bool{}
	for _, a := range c.s.alarms() {
		raised[a.Name] = true
	}
	for _, name := range alarmNames {
		v := 0.0
		if raised[name] {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descAlarm, prometheus.GaugeValue, v, name)
	}
	st := c.s.audit.Status()
	writable := 0.0
	if st.Writable {
		writable = 1
	}
	ch <- prometheus.MustNewConstMetric(descAuditBytes, prometheus.GaugeValue, float64(st.Bytes))
	ch <- prometheus.MustNewConstMetric(descAuditMaxBytes, prometheus.GaugeValue, float64(st.MaxBytes))
	ch <- prometheus.MustNewConstMetric(descAuditWritable, prometheus.GaugeValue, writable)
	ch <- prometheus.MustNewConstMetric(descAuditLost, prometheus.GaugeValue, float64(st.Lost))
	ch <- prometheus.MustNewConstMetric(descAuditFolded, prometheus.CounterValue, float64(c.s.auditFold.Folded()))
	ch <- prometheus.MustNewConstMetric(descAuditScanned, prometheus.CounterValue, float64(c.s.audit.ScannedBytes()))
}
