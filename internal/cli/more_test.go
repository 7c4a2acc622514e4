package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

func TestConfigPrecedence(t *testing.T) {
	dir := isolate(t)
	f := newFake(t)
	f.HandleFunc("GET /v1/hosts", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.List[api.Host]{Items: []api.Host{}})
	})
	path := filepath.Join(dir, "polyvisor", "config.yaml")
	if err := WriteConfig(path, Config{Server: "https://from-file.invalid:1", Token: "file-token", CAFile: "ca.pem"}); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config file: %v, mode %v", err, st.Mode())
	}

	cfg, err := LoadConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server != "https://from-file.invalid:1" || cfg.Token != "file-token" || cfg.CAFile != filepath.Join(dir, "polyvisor", "ca.pem") {
		t.Errorf("from the file: %+v", cfg)
	}

	// The environment beats the file.
	t.Setenv(envServer, f.srv.URL)
	t.Setenv(envToken, "env-token")
	cfg, err = LoadConfig()
	if err != nil || cfg.Server != f.srv.URL || cfg.Token != "env-token" {
		t.Errorf("with the environment: %+v, %v", cfg, err)
	}
	if _, errOut, code := cli(t, "", "host", "list"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	// The flags beat the environment.
	if _, errOut, code := cli(t, "", "--token", "flag-token", "host", "list"); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if got := strings.Join(f.auth, " | "); got != "Bearer env-token | Bearer flag-token" {
		t.Errorf("Authorization headers: %s", got)
	}
	t.Setenv(envServer, "")
	if _, errOut, code := cli(t, "", "--server", f.srv.URL, "host", "list"); code != 0 {
		t.Fatalf("--server over the file: exit %d: %s", code, errOut)
	}

	// A config file named by the user must exist.
	if _, errOut, code := cli(t, "", "--config", filepath.Join(dir, "missing.yaml"), "host", "list"); code != ExitFailure ||
		!strings.Contains(errOut, "missing.yaml") {
		t.Errorf("missing --config: exit %d: %s", code, errOut)
	}
	// A misspelt key is an error.
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("server: https://h\nca_file: x.pem\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := cli(t, "", "--config", bad, "host", "list"); code != ExitFailure || !strings.Contains(errOut, "ca_file") {
		t.Errorf("misspelt key: exit %d: %s", code, errOut)
	}
	// POLYVISOR_CONFIG names another file.
	other := filepath.Join(dir, "other.yaml")
	if err := WriteConfig(other, Config{Server: "unix:///run/other.sock"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv(envConfig, other)
	if cfg, err := LoadConfig(); err != nil || cfg.Server != "unix:///run/other.sock" || cfg.Token != "env-token" {
		t.Errorf("POLYVISOR_CONFIG: %+v, %v", cfg, err)
	}
}

func TestConfigPath(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/xdg")
	if p, _ := ConfigPath(); p != "/xdg/polyvisor/config.yaml" {
		t.Errorf("with XDG_CONFIG_HOME: %s", p)
	}
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv("HOME", "/home/u")
	if p, _ := ConfigPath(); p != "/home/u/.config/polyvisor/config.yaml" {
		t.Errorf("without XDG_CONFIG_HOME: %s", p)
	}
}

func TestConsolePipesStdin(t *testing.T) {
	isolate(t)
	f := newFake(t)
	f.HandleFunc("GET /v1/vms/{name}/console", func(w http.ResponseWriter, r *http.Request) {
		if r.PathValue("name") != "web1" || r.URL.Query().Get("type") != "serial" {
			t.Errorf("console of %s?%s", r.PathValue("name"), r.URL.RawQuery)
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		_, b, err := ws.Read(r.Context())
		if err != nil {
			return
		}
		_ = ws.Write(r.Context(), websocket.MessageBinary, append([]byte("echo:"), b...))
		_ = ws.Close(websocket.StatusNormalClosure, "")
	})
	out, errOut, code := cli(t, "root\n", "--server", f.srv.URL, "vm", "console", "web1")
	if code != 0 || out != "echo:root\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestCopyInputDetachesOnCtrlBracket(t *testing.T) {
	var sent bytes.Buffer
	detach, err := copyInput(&sent, strings.NewReader("ls\r\x1dafter"), true)
	if !detach || err != nil || sent.String() != "ls\r" {
		t.Errorf("raw: detach %v, err %v, sent %q", detach, err, sent.String())
	}
	sent.Reset()
	detach, err = copyInput(&sent, strings.NewReader("a\x1db"), false)
	if detach || err != nil || sent.String() != "a\x1db" {
		t.Errorf("piped: detach %v, err %v, sent %q", detach, err, sent.String())
	}
}

func TestImageImport(t *testing.T) {
	isolate(t)
	file := filepath.Join(t.TempDir(), "debian-12.qcow2")
	payload := bytes.Repeat([]byte{0xab}, 3<<20)
	if err := os.WriteFile(file, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFake(t)
	var uploaded int
	var imported api.ImageCreate
	f.HandleFunc("POST /v1/images", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Content-Type") == "application/octet-stream" {
			q := r.URL.Query()
			if q.Get("name") != "debian-12" || q.Get("kind") != "disk" {
				t.Errorf("upload query %s", r.URL.RawQuery)
			}
			b, _ := io.ReadAll(r.Body)
			uploaded = len(b)
		} else if err := json.NewDecoder(r.Body).Decode(&imported); err != nil {
			t.Errorf("decode: %v", err)
		}
		reply(w, http.StatusAccepted, api.Operation{ID: "op-img", Status: api.OpPending})
	})
	f.operations(api.Operation{ID: "op-img", Kind: api.OpImageImport, Target: api.Ref{Kind: "image", Name: "debian-12"}, Status: api.OpSucceeded})

	out, errOut, code := cli(t, "", "--server", f.srv.URL, "image", "import", file)
	if code != 0 || uploaded != len(payload) {
		t.Fatalf("exit %d, uploaded %d, stderr:\n%s", code, uploaded, errOut)
	}
	if !strings.Contains(errOut, "Uploading debian-12.qcow2: 100%") || !strings.Contains(out, "image.import image/debian-12 succeeded") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out, errOut)
	}

	out, errOut, code = cli(t, "", "--server", f.srv.URL, "image", "import", "https://example.com/vmlinuz-6.1?x=1", "--kind", "kernel", "--no-wait")
	if code != 0 || out != "op-img\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if imported.Name != "vmlinuz-6.1" || imported.Kind != "kernel" || imported.URL != "https://example.com/vmlinuz-6.1?x=1" {
		t.Errorf("import request %+v", imported)
	}
}

func TestJoinTokenPrintsTheAgentCommand(t *testing.T) {
	isolate(t)
	f := newFake(t)
	var ttl api.JoinTokenCreate
	f.HandleFunc("POST /v1/hosts/join-tokens", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&ttl)
		reply(w, http.StatusCreated, api.JoinToken{ID: "jt1", Token: "pvjoin-secret", ExpiresAt: time.Now().Add(time.Hour), CAFingerprint: "ab12"})
	})
	out, errOut, code := cli(t, "", "--server", f.srv.URL, "host", "join-token", "--ttl", "2h")
	if code != 0 || ttl.TTLSeconds != 7200 {
		t.Fatalf("exit %d, ttl %d: %s", code, ttl.TTLSeconds, errOut)
	}
	// The fake speaks plain HTTP, which is no address for an agent, and
	// names no URL of its own: say what to put instead.
	if !strings.Contains(out, "polyvisor agent --server https://SERVER:7443 --join-token pvjoin-secret\n") || !strings.Contains(out, "ab12") ||
		!strings.Contains(out, "does not listen on TCP") {
		t.Errorf("stdout:\n%s", out)
	}
}

func TestParseMiB(t *testing.T) {
	for in, want := range map[string]int64{
		"512": 512, "512M": 512, "512MiB": 512, "2G": 2048, "2gb": 2048, "1.5G": 1536, "1T": 1 << 20, "2048K": 2,
	} {
		if got, err := parseMiB(in); err != nil || got != want {
			t.Errorf("parseMiB(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "12X", "0", "-1G", "1.3M", "1K"} {
		if _, err := parseMiB(in); err == nil {
			t.Errorf("parseMiB(%q) succeeded", in)
		}
	}
	for mib, want := range map[int64]string{512: "512M", 2048: "2G", 1536: "1.5G", 1 << 20: "1T"} {
		if got := formatMiB(mib); got != want {
			t.Errorf("formatMiB(%d) = %q, want %q", mib, got, want)
		}
	}
}

func TestImageName(t *testing.T) {
	for in, want := range map[string]string{
		"/tmp/debian-12-genericcloud-amd64.qcow2": "debian-12-genericcloud-amd64",
		"disk.img.xz": "disk",
		"vmlinuz":     "vmlinuz",
	} {
		if got := imageName(in, false); got != want {
			t.Errorf("imageName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := imageName("https://cloud.example/images/jammy.img?sig=1", true); got != "jammy" {
		t.Errorf("URL name = %q", got)
	}
}

func TestExtraCommandsAndCompletion(t *testing.T) {
	isolate(t)
	ran := false
	server := &cobra.Command{Use: "server", RunE: func(*cobra.Command, []string) error { ran = true; return nil }}
	var out, errOut bytes.Buffer
	if code := run(context.Background(), NewRootCommand(server), []string{"server"}, nil, &out, &errOut); code != 0 || !ran {
		t.Errorf("extra command: exit %d, ran %v, stderr %s", code, ran, errOut.String())
	}
	if stdout, _, code := cli(t, "", "vm"); code != 0 || !strings.Contains(stdout, "Available Commands") {
		t.Errorf("vm alone: exit %d, stdout %s", code, stdout)
	}
	stdout, stderr, code := cli(t, "", "completion", "bash")
	if code != 0 || !strings.Contains(stdout, "polyvisor") {
		t.Errorf("completion bash: exit %d, stderr %s", code, stderr)
	}
}
