package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestServerTakesMetricsListenFromConfigFile runs `polyvisor server` with
// --metrics-listen set in its config file, and scrapes that address.
func TestServerTakesMetricsListenFromConfigFile(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	metrics := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	p := writeConfig(t, "data-dir: "+dir+"\nlisten: 127.0.0.1:0\nno-agent: true\nlog-level: warn\nmetrics-listen: "+metrics+"\n")
	cmd := ServerCommand()
	cmd.SetArgs([]string{"--config", p})
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server: %v", err)
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), "process_start_time_seconds") {
				t.Fatalf("metrics listener: %d %.200s", resp.StatusCode, b)
			}
			return
		}
		select {
		case err := <-done:
			t.Fatalf("server ended: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics listener on %s from the config file: %v", metrics, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
