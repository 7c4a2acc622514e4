package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// TestMetricsNeedAuthentication: /metrics on the API port answers only a
// superadmin or the metrics token, which the server writes 0600 to its
// data dir and which opens nothing else.
func TestMetricsNeedAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	fi, err := os.Stat(e.s.MetricsTokenFile())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("metrics token file mode %v, want 0600", fi.Mode().Perm())
	}
	b, _ := os.ReadFile(e.s.MetricsTokenFile())
	tok := strings.TrimSpace(string(b))
	if !strings.HasPrefix(tok, auth.PrefixMetrics) {
		t.Errorf("metrics token %q lacks its prefix %s", tok, auth.PrefixMetrics)
	}
	for who, want := range map[string]int{"": 401, api.RoleViewer: 403, "h1": 403, "superadmin": 200} {
		if status, _, _ := e.do("GET", "/metrics", e.tokens[who], nil); status != want {
			t.Errorf("/metrics as %q: %d, want %d", who, status, want)
		}
	}
	status, body, _ := e.do("GET", "/metrics", tok, nil)
	if status != 200 || !strings.Contains(string(body), "# HELP") {
		t.Errorf("/metrics with the token of the file: %d %.200s", status, body)
	}
	for _, path := range []string{"/v1/hosts", "/v1/vms?project=pa", "/v1/whoami", "/v1/tokens"} {
		if status, _, _ := e.do("GET", path, tok, nil); status != 403 {
			t.Errorf("%s with the metrics token: %d, want 403", path, status)
		}
	}
}

// TestMetricsTokenKeptAndRotated: a restart keeps the metrics token;
// deleting its file and restarting makes a new one and kills the old.
func TestMetricsTokenKeptAndRotated(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	start := func() *Server {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s, err := New(ctx, Config{DataDir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := start()
	first := s.metricsToken
	s.Close()
	s = start()
	if s.metricsToken != first {
		t.Error("a restart changed the metrics token")
	}
	s.Close()
	if err := os.Remove(filepath.Join(dir, "metrics.token")); err != nil {
		t.Fatal(err)
	}
	s = start()
	defer s.Close()
	if s.metricsToken == first {
		t.Fatal("no new metrics token after its file was deleted")
	}
	if _, err := s.identify(first); err == nil {
		t.Error("the replaced metrics token still works")
	}
	if id, err := s.identify(s.metricsToken); err != nil || id.Kind != auth.KindMetrics {
		t.Errorf("the new metrics token: %+v %v", id, err)
	}
}

// TestMetricsListener: --metrics-listen serves /metrics alone, without
// authentication, on its own address.
func TestMetricsListener(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Edge: EdgeConfig{MetricsListen: "127.0.0.1:0"}})
	base := "http://" + e.s.MetricsAddr().String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := get("/metrics"); status != 200 || !strings.Contains(body, "polyvisor_host_ready") {
		t.Errorf("/metrics on the metrics listener: %d %.200s", status, body)
	}
	for _, path := range []string{"/v1/hosts", "/healthz", "/"} {
		if status, _ := get(path); status != 404 {
			t.Errorf("%s on the metrics listener: %d, want 404", path, status)
		}
	}
	if e.s.Addr().String() == e.s.MetricsAddr().String() {
		t.Error("the API's address is the metrics listener's")
	}
}

// TestPrometheusScrapes runs a real Prometheus against the server: over
// TLS on the API port with the metrics token file as its bearer token
// file, as the README says, and on the separate metrics listener.
func TestPrometheusScrapes(t *testing.T) {
	t.Parallel()
	bin := peer.Binary(t, "prometheus", "apt-get install prometheus")
	e := newEnv(t, Config{Edge: EdgeConfig{MetricsListen: "127.0.0.1:0"}})
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	web := l.Addr().String()
	l.Close()
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
scrape_configs:
  - job_name: polyvisor
    scheme: https
    tls_config:
      ca_file: %s
    authorization:
      credentials_file: %s
    static_configs:
      - targets: ['%s']
  - job_name: polyvisor-metrics-listener
    static_configs:
      - targets: ['%s']
`, e.s.CAFile(), e.s.MetricsTokenFile(), e.s.Addr(), e.s.MetricsAddr())
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+web)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()

	up := func(job string) (string, error) {
		resp, err := http.Get("http://" + web + "/api/v1/query?query=up%7Bjob%3D%22" + job + "%22%7D")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		var r struct {
			Data struct {
				Result []struct {
					Value []any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			return "", err
		}
		if len(r.Data.Result) == 0 || len(r.Data.Result[0].Value) < 2 {
			return "", nil
		}
		v, _ := r.Data.Result[0].Value[1].(string)
		return v, nil
	}
	for _, job := range []string{"polyvisor", "polyvisor-metrics-listener"} {
		deadline := time.Now().Add(45 * time.Second)
		for {
			v, err := up(job)
			if v == "1" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("prometheus job %s: up=%q (%v)\n%s", job, v, err, logs.String())
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
}
