package daemon

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func testCommand() (*cobra.Command, *struct {
	listen  string
	hosts   []string
	idle    time.Duration
	limit   int
	noAgent bool
}) {
	v := &struct {
		listen  string
		hosts   []string
		idle    time.Duration
		limit   int
		noAgent bool
	}{}
	cmd := &cobra.Command{Use: "server"}
	f := cmd.Flags()
	f.StringVar(&v.listen, "listen", ":7443", "")
	f.StringSliceVar(&v.hosts, "advertise-address", nil, "")
	f.DurationVar(&v.idle, "idle-timeout", time.Minute, "")
	f.IntVar(&v.limit, "max-conns-per-address", 256, "")
	f.BoolVar(&v.noAgent, "no-agent", false, "")
	return cmd, v
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFileSetsFlags(t *testing.T) {
	cmd, v := testCommand()
	if err := cmd.Flags().Parse([]string{"--listen", ":9443"}); err != nil {
		t.Fatal(err)
	}
	p := writeConfig(t, "listen: ':1234'\nadvertise-address: [pv.example.com, 10.0.0.5]\nidle-timeout: 45s\nmax-conns-per-address: 12\nno-agent: true\n")
	if err := applyConfigFile(cmd, p); err != nil {
		t.Fatal(err)
	}
	if v.listen != ":9443" {
		t.Errorf("listen = %q: the command line must win over the file", v.listen)
	}
	if strings.Join(v.hosts, ",") != "pv.example.com,10.0.0.5" || v.idle != 45*time.Second || v.limit != 12 || !v.noAgent {
		t.Errorf("settings from the file: %+v", v)
	}
}

func TestConfigFileErrorsNameTheSetting(t *testing.T) {
	for text, want := range map[string]string{
		"listn: ':1'\n":                 `unknown setting "listn"`,
		"idle-timeout: soon\n":          "idle-timeout: invalid argument",
		"max-conns-per-address: many\n": "max-conns-per-address: invalid argument",
		"listen:\n":                     "listen: has no value",
		"listen: {a: b}\n":              "listen: is a map",
		"config: other.yaml\n":          `unknown setting "config"`,
		"- just\n- a list\n":            "cannot unmarshal",
	} {
		cmd, _ := testCommand()
		cmd.Flags().String("config", "", "")
		err := applyConfigFile(cmd, writeConfig(t, text))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "server.yaml") {
			t.Errorf("%q: %v, want an error naming the file and %q", text, err, want)
		}
	}
	cmd, _ := testCommand()
	if err := applyConfigFile(cmd, filepath.Join(t.TempDir(), "none.yaml")); err == nil || !strings.Contains(err.Error(), "none.yaml") {
		t.Errorf("a missing file: %v", err)
	}
}

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
