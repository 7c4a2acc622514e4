package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
)

// metrics holds the server's Prometheus registry. Counters are updated as
// things happen; VM and host gauges are read from the index at scrape time.
type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec
	latency   *prometheus.HistogramVec
	opsStart  *prometheus.CounterVec
	opsFinish *prometheus.CounterVec
	handler   http.Handler
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "polyvisor_api_requests_total", Help: "API requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "polyvisor_api_request_duration_seconds", Help: "API request latency by route (streams excluded).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"route"}),
		opsStart: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "polyvisor_operations_started_total", Help: "Operations started by kind.",
		}, []string{"kind"}),
		opsFinish: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "polyvisor_operations_finished_total", Help: "Operations finished by kind and outcome.",
		}, []string{"kind", "status"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.opsStart, m.opsFinish,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&inventoryCollector{s: s})
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

func (m *metrics) serve(w http.ResponseWriter, r *http.Request) { m.handler.ServeHTTP(w, r) }

func (m *metrics) observeRequest(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.latency.WithLabelValues(route).Observe(d.Seconds())
}

// OpStarted counts an operation started.
func (m *metrics) OpStarted(kind string) { m.opsStart.WithLabelValues(kind).Inc() }

// OpFinished counts an operation finished.
func (m *metrics) OpFinished(kind, status string) { m.opsFinish.WithLabelValues(kind, status).Inc() }

var (
	descVMs        = prometheus.NewDesc("polyvisor_vms", "VMs by observed power state.", []string{"state"}, nil)
	descHostReady  = prometheus.NewDesc("polyvisor_host_ready", "1 when the host's agent heartbeats.", []string{"host"}, nil)
	descHostCPUs   = prometheus.NewDesc("polyvisor_host_cpus", "Physical CPUs of the host.", []string{"host"}, nil)
	descHostMem    = prometheus.NewDesc("polyvisor_host_memory_bytes", "Memory of the host.", []string{"host"}, nil)
	descAllocVCPUs = prometheus.NewDesc("polyvisor_host_allocated_vcpus", "vCPUs of the VMs placed on the host.", []string{"host"}, nil)
	descAllocMem   = prometheus.NewDesc("polyvisor_host_allocated_memory_bytes", "Memory of the VMs placed on the host.", []string{"host"}, nil)
	descAllocVMs   = prometheus.NewDesc("polyvisor_host_vms", "VMs placed on the host.", []string{"host"}, nil)
	descLeader     = prometheus.NewDesc("polyvisor_controller_leader", "1 while this server leads the controllers (operations, liveness, leases, estates), else 0.", []string{"server"}, nil)
)

// inventoryCollector reads VM and host figures from the index at scrape time.
type inventoryCollector struct{ s *Server }

func (c *inventoryCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descVMs, descHostReady, descHostCPUs, descHostMem, descAllocVCPUs, descAllocMem, descAllocVMs, descLeader} {
		ch <- d
	}
}

func (c *inventoryCollector) Collect(ch chan<- prometheus.Metric) {
	leading := 0.0
	if _, ok := c.s.ctl.Term(); ok {
		leading = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leading, c.s.ctl.Self().Name)
	byState := map[string]int{}
	for _, vm := range listAll(c.s.vms, nil) {
		byState[vm.Status.PowerState]++
	}
	for state, n := range byState {
		ch <- prometheus.MustNewConstMetric(descVMs, prometheus.GaugeValue, float64(n), state)
	}
	for _, h := range listAll(c.s.hosts, nil) {
		ready := 0.0
		if h.Status.State == api.HostReady {
			ready = 1
		}
		a := c.s.ctl.Placer.Allocation(h.Name)
		ch <- prometheus.MustNewConstMetric(descHostReady, prometheus.GaugeValue, ready, h.Name)
		ch <- prometheus.MustNewConstMetric(descHostCPUs, prometheus.GaugeValue, float64(h.Status.CPUs), h.Name)
		ch <- prometheus.MustNewConstMetric(descHostMem, prometheus.GaugeValue, float64(h.Status.MemoryMiB<<20), h.Name)
		ch <- prometheus.MustNewConstMetric(descAllocVCPUs, prometheus.GaugeValue, float64(a.VCPUs), h.Name)
		ch <- prometheus.MustNewConstMetric(descAllocMem, prometheus.GaugeValue, float64(a.MemoryMiB<<20), h.Name)
		ch <- prometheus.MustNewConstMetric(descAllocVMs, prometheus.GaugeValue, float64(a.VMs), h.Name)
	}
}

// tokenKindMetrics is the kind of the metrics token: it reads /metrics and
// nothing else.
const tokenKindMetrics = "metrics"

// MetricsTokenFile is the path of the metrics token (0600), the bearer
// token a Prometheus server scrapes /metrics with.
func (s *Server) MetricsTokenFile() string { return filepath.Join(s.cfg.DataDir, "metrics.token") }

// ensureMetricsToken makes sure the metrics token file holds a working
// metrics token, minting one (and revoking the earlier ones) when it does
// not: deleting the file and restarting the server rotates the token.
func (s *Server) ensureMetricsToken(ctx context.Context) error {
	path := s.MetricsTokenFile()
	if b, err := os.ReadFile(path); err == nil {
		tok := strings.TrimSpace(string(b))
		if id, err := s.identify(tok); err == nil && id.Kind == auth.KindMetrics {
			s.metricsToken = tok
			return nil
		}
	}
	for _, t := range listAll(s.tokens, func(t *tokenRecord) bool { return t.Kind == tokenKindMetrics }) {
		s.deleteToken(ctx, t)
	}
	tok, _, err := s.mintToken(ctx, auth.PrefixMetrics, &tokenRecord{Kind: tokenKindMetrics, Name: "metrics"})
	if err != nil {
		return fmt.Errorf("creating the metrics token: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(tok+"\n"), 0o600); err != nil {
		return fmt.Errorf("writing the metrics token: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing the metrics token: %w", err)
	}
	s.metricsToken = tok
	return nil
}
