package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/polyvisor/polyvisor/api"
)

// fake is a stand-in server: a mux the test fills, and a log of requests.
type fake struct {
	*http.ServeMux
	srv  *httptest.Server
	mu   sync.Mutex
	log  []string
	auth []string
}

func newFake(t *testing.T) *fake {
	t.Helper()
	f := &fake{ServeMux: http.NewServeMux()}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.log = append(f.log, r.Method+" "+r.URL.RequestURI())
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		f.mu.Unlock()
		f.ServeMux.ServeHTTP(w, r)
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// requests returns the log of requests so far.
func (f *fake) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// operations answers GET /v1/operations/{id} with the given states in
// turn, the last one for good.
func (f *fake) operations(states ...api.Operation) {
	var mu sync.Mutex
	i := 0
	f.HandleFunc("GET /v1/operations/{id}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		op := states[min(i, len(states)-1)]
		i++
		mu.Unlock()
		reply(w, 200, op)
	})
}

// isolate clears the environment and config the CLI reads.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	for _, k := range []string{envServer, envToken, envCAFile, envConfig, envProject} {
		t.Setenv(k, "")
	}
	return dir
}

// cli runs the command line and returns its output and exit code.
func cli(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	code = run(ctx, NewRootCommand(), args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), code
}

func testVM(name, state string) api.VM {
	return api.VM{
		Meta:   api.Meta{Name: name, UID: "uid-" + name, CreatedAt: time.Now().Add(-3 * time.Hour)},
		Spec:   api.VMSpec{Host: "h1", VCPUs: 2, MemoryMiB: 2048, PowerState: api.PowerRunning},
		Status: api.VMStatus{PowerState: state, IPs: []string{"10.0.2.15"}},
	}
}

func TestVMListOutputs(t *testing.T) {
	isolate(t)
	f := newFake(t)
	f.HandleFunc("GET /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("continue") == "" {
			reply(w, 200, api.List[api.VM]{Items: []api.VM{testVM("web1", api.PowerRunning)}, Continue: "next"})
			return
		}
		reply(w, 200, api.List[api.VM]{Items: []api.VM{testVM("db1", "")}})
	})

	out, errOut, code := cli(t, "", "--server", f.srv.URL, "vm", "list")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", out)
	}
	if !strings.HasPrefix(lines[0], "NAME ") || !strings.Contains(lines[0], "STATE") || !strings.Contains(lines[0], "MEMORY") {
		t.Errorf("header = %q", lines[0])
	}
	if fields := strings.Fields(lines[1]); strings.Join(fields, " ") != "web1 running running h1 - 2 2G 10.0.2.15 3h" {
		t.Errorf("row = %q", lines[1])
	}
	if fields := strings.Fields(lines[2]); fields[0] != "db1" || fields[1] != "pending" {
		t.Errorf("row = %q", lines[2])
	}
	// Columns line up.
	if strings.Index(lines[0], "STATE") != strings.Index(lines[1], "running") {
		t.Errorf("columns are not aligned:\n%s", out)
	}

	out, _, code = cli(t, "", "--server", f.srv.URL, "-o", "json", "vm", "list", "--selector", "env=prod")
	var l api.List[api.VM]
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || len(l.Items) != 2 || l.Items[1].Name != "db1" {
		t.Errorf("-o json (exit %d):\n%s", code, out)
	}
	if reqs := f.requests(); !strings.Contains(reqs[len(reqs)-1], "selector=env%3Dprod") {
		t.Errorf("selector not sent: %v", reqs)
	}

	out, _, code = cli(t, "", "--server", f.srv.URL, "-o", "yaml", "vm", "list", "--limit", "1")
	var y map[string]any
	if code != 0 || yaml.Unmarshal([]byte(out), &y) != nil || !strings.Contains(out, "memoryMiB: 2048") || !strings.Contains(out, "name: web1") {
		t.Errorf("-o yaml (exit %d):\n%s", code, out)
	}
	if strings.Contains(out, "db1") {
		t.Errorf("--limit 1 followed the continue token:\n%s", out)
	}
}

func TestVMCreateWaitsAndExitCodeFollowsTheOperation(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	userData := filepath.Join(dir, "user-data")
	if err := os.WriteFile(userData, []byte("#cloud-config\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFake(t)
	var got api.VMCreate
	var key string
	f.HandleFunc("POST /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		key = r.Header.Get("Idempotency-Key")
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&got); err != nil {
			t.Errorf("decode: %v", err)
		}
		reply(w, http.StatusAccepted, api.Operation{ID: "op1", Kind: api.OpVMCreate, Status: api.OpPending,
			Target: api.Ref{Kind: "vm", Name: got.Name}})
	})
	target := api.Ref{Kind: "vm", Name: "web1"}
	f.operations(
		api.Operation{ID: "op1", Kind: api.OpVMCreate, Target: target, Status: api.OpRunning, Progress: 30, Message: "placing"},
		api.Operation{ID: "op1", Kind: api.OpVMCreate, Target: target, Status: api.OpFailed,
			Error: &api.Error{Code: api.CodeUnprocessable, Message: "no host has room for 2G"}},
	)

	out, errOut, code := cli(t, "", "--server", f.srv.URL, "vm", "create", "web1",
		"--vcpus", "2", "--memory", "2G", "--image", "debian", "--disk-size", "10G", "--blank-disk", "1G",
		"--blank-disk", "512M", "--label", "env=prod", "--user-data", userData, "--stopped", "--idempotency-key", "k1")
	if code != ExitFailure {
		t.Errorf("exit %d, want %d for a failed operation", code, ExitFailure)
	}
	if !strings.Contains(out, "vm.create vm/web1 failed") {
		t.Errorf("stdout:\n%s", out)
	}
	if !strings.Contains(errOut, "vm.create vm/web1: running 30% - placing") || !strings.Contains(errOut, "Error: ") ||
		!strings.Contains(errOut, "no host has room for 2G") {
		t.Errorf("stderr:\n%s", errOut)
	}
	if key != "k1" {
		t.Errorf("Idempotency-Key = %q", key)
	}
	want := api.VMCreate{
		Name: "web1", Labels: map[string]string{"env": "prod"}, VCPUs: 2, MemoryMiB: 2048,
		Disks:      []api.Disk{{Name: "root", Image: "debian", SizeMiB: 10240}, {SizeMiB: 1024}, {SizeMiB: 512}},
		NICs:       []api.NIC{{Network: api.NetworkUser}},
		CloudInit:  &api.CloudInit{UserData: "#cloud-config\n"},
		PowerState: api.PowerStopped,
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("server got\n  %s\nwant\n  %s", gb, wb)
	}

	// The same create, succeeding this time, in JSON.
	f2 := newFake(t)
	f2.HandleFunc("POST /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusAccepted, api.Operation{ID: "op2", Status: api.OpPending})
	})
	f2.operations(api.Operation{ID: "op2", Kind: api.OpVMCreate, Target: target, Status: api.OpSucceeded, Progress: 100})
	out, errOut, code = cli(t, "", "--server", f2.srv.URL, "-o", "json", "vm", "create", "web1")
	var op api.Operation
	if code != 0 || json.Unmarshal([]byte(out), &op) != nil || op.Status != api.OpSucceeded {
		t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
}

func TestNoWaitPrintsTheOperationID(t *testing.T) {
	isolate(t)
	f := newFake(t)
	var body string
	f.HandleFunc("POST /v1/vms/{name}/stop", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		body = strings.TrimSpace(string(b))
		reply(w, http.StatusAccepted, api.Operation{ID: "op-stop", Status: api.OpPending})
	})
	out, errOut, code := cli(t, "", "--server", f.srv.URL, "vm", "stop", "web1", "--timeout", "30s", "--force", "--no-wait")
	if code != 0 || out != "op-stop\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if body != `{"timeoutSeconds":30,"force":true}` {
		t.Errorf("stop body = %s", body)
	}
	for _, r := range f.requests() {
		if strings.Contains(r, "/v1/operations/") {
			t.Errorf("--no-wait still waited: %s", r)
		}
	}
}

func TestOpWaitExitCodes(t *testing.T) {
	isolate(t)
	for status, want := range map[string]int{api.OpSucceeded: 0, api.OpFailed: 1, api.OpCancelled: 1} {
		f := newFake(t)
		f.operations(api.Operation{ID: "op1", Kind: api.OpVMStart, Status: api.OpRunning},
			api.Operation{ID: "op1", Kind: api.OpVMStart, Status: status})
		_, errOut, code := cli(t, "", "--server", f.srv.URL, "op", "wait", "op1")
		if code != want {
			t.Errorf("%s: exit %d, want %d (%s)", status, code, want, errOut)
		}
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	isolate(t)
	for _, args := range [][]string{
		{"vm", "create", "web1", "--memory", "12X"},
		{"vm", "create", "web1", "--memory", "1.3M"},
		{"vm", "create", "web1", "--label", "novalue"},
		{"vm", "create", "web1", "--disk-size", "1G"},
		{"vm", "show"},
		{"vm", "bogus"},
		{"bogus"},
		{"vm", "list", "--no-such-flag"},
		{"-o", "xml", "vm", "list"},
		{"image", "import", "x.img", "--kind", "floppy"},
	} {
		_, errOut, code := cli(t, "", args...)
		if code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, ExitUsage, errOut)
		}
		if !strings.HasPrefix(errOut, "Error: ") {
			t.Errorf("%v: stderr %q", args, errOut)
		}
	}
	_, errOut, _ := cli(t, "", "vm", "create", "web1", "--memory", "12X")
	if !strings.Contains(errOut, "--memory") {
		t.Errorf("the error does not name the flag: %s", errOut)
	}
}

func TestServerErrorsNameTheField(t *testing.T) {
	isolate(t)
	f := newFake(t)
	f.HandleFunc("POST /v1/vms", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusBadRequest, api.ErrorBody{Error: api.Invalid("disks[0].image", "image %q not found", "nope")})
	})
	f.HandleFunc("GET /v1/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusNotFound, api.ErrorBody{Error: api.NotFound("VM", r.PathValue("name"))})
	})
	_, errOut, code := cli(t, "", "--server", f.srv.URL, "vm", "create", "web1", "--image", "nope")
	if code != ExitFailure || !strings.Contains(errOut, `Error: create VM "web1": --image: image "nope" not found`) {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = cli(t, "", "--server", f.srv.URL, "vm", "show", "ghost")
	if code != ExitFailure || !strings.Contains(errOut, `VM "ghost" not found`) {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
	_, errOut, code = cli(t, "", "vm", "list")
	if code != ExitFailure || !strings.Contains(errOut, "no server configured") {
		t.Errorf("without a server: exit %d, stderr %q", code, errOut)
	}
}
