package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

func TestVMMigrateAndHostDrain(t *testing.T) {
	isolate(t)
	f := newFake(t)
	var mu sync.Mutex
	bodies := map[string]string{}
	f.HandleFunc("POST /v1/vms/{name}/migrate", func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies[r.PathValue("name")] = strings.TrimSpace(string(b))
		mu.Unlock()
		if r.PathValue("name") == "resting" {
			reply(w, http.StatusUnprocessableEntity, api.ErrorBody{Error: api.Unprocessable("vm %q is stopped: only a running vm migrates (live)", "resting")})
			return
		}
		reply(w, http.StatusAccepted, api.Operation{ID: "op1", Kind: api.OpVMMigrate, Status: api.OpRunning})
	})
	drainOp := func(id, host, status string, moves ...api.DrainMove) api.Operation {
		res, _ := json.Marshal(api.HostDrain{Host: host, Moves: moves})
		op := api.Operation{ID: id, Kind: api.OpHostDrain, Target: api.Ref{Kind: "host", Name: host}, Status: status, Result: res}
		if status == api.OpFailed {
			op.Error = &api.Error{Code: api.CodeUnprocessable, Message: "1 of 2 vm(s) did not leave host \"h9\""}
		}
		return op
	}
	a := api.DrainMove{VM: "default/a", Target: "h2", Operation: "op2", Outcome: "migrated"}
	b := api.DrainMove{VM: "default/b", Outcome: "skipped", Error: `vm "b" is paused`}
	f.HandleFunc("POST /v1/hosts/{name}/drain", func(w http.ResponseWriter, r *http.Request) {
		id := map[string]string{"h1": "d1", "h9": "d9"}[r.PathValue("name")]
		reply(w, http.StatusAccepted, drainOp(id, r.PathValue("name"), api.OpRunning, api.DrainMove{VM: "default/a", Outcome: "moving"}))
	})
	var mu2 sync.Mutex
	seen := map[string]int{}
	f.HandleFunc("GET /v1/operations/{id}", func(w http.ResponseWriter, r *http.Request) {
		id := r.PathValue("id")
		mu2.Lock()
		seen[id]++
		n := seen[id]
		mu2.Unlock()
		switch {
		case id == "op1":
			reply(w, 200, api.Operation{ID: "op1", Kind: api.OpVMMigrate, Target: api.Ref{Kind: "vm", Name: "web1"}, Status: api.OpSucceeded})
		case id == "d1" && n == 1:
			reply(w, 200, drainOp("d1", "h1", api.OpRunning, a))
		case id == "d1":
			reply(w, 200, drainOp("d1", "h1", api.OpSucceeded, a))
		default:
			reply(w, 200, drainOp("d9", "h9", api.OpFailed, a, b))
		}
	})
	srv := []string{"--server", f.srv.URL}

	out, errOut, code := cli(t, "", append(srv, "vm", "migrate", "web1", "--host", "host2")...)
	if code != 0 || !strings.Contains(out, "succeeded") {
		t.Errorf("vm migrate: exit %d\n%s\n%s", code, out, errOut)
	}
	if b := bodies["web1"]; b != `{"host":"host2"}` {
		t.Errorf("vm migrate body %s", b)
	}
	if _, _, code := cli(t, "", append(srv, "vm", "migrate", "web2", "--no-wait")...); code != 0 || bodies["web2"] != `{}` {
		t.Errorf("vm migrate without a host: exit %d, body %s (want the scheduler's choice)", code, bodies["web2"])
	}
	if _, errOut, code := cli(t, "", append(srv, "vm", "migrate", "resting")...); code == 0 || !strings.Contains(errOut, "is stopped") {
		t.Errorf("vm migrate of a stopped vm: exit %d, %s", code, errOut)
	}

	out, errOut, code = cli(t, "", append(srv, "host", "drain", "h1")...)
	if code != 0 || !strings.Contains(out, "default/a") || !strings.Contains(out, "migrated") || !strings.Contains(errOut, "default/a: migrated to h2") || !strings.Contains(errOut, "drained") {
		t.Errorf("host drain: exit %d\n%s\n%s", code, out, errOut)
	}
	if strings.Count(errOut, "default/a: migrated") != 1 {
		t.Errorf("host drain told a move more than once:\n%s", errOut)
	}
	out, errOut, code = cli(t, "", append(srv, "host", "drain", "h9")...)
	if code == 0 || !strings.Contains(out, "is paused") || !strings.Contains(errOut, `default/b: skipped: vm "b" is paused`) || !strings.Contains(errOut, "did not leave host") {
		t.Errorf("host drain with a vm that stays: exit %d\n%s\n%s", code, out, errOut)
	}
	out, _, code = cli(t, "", append(srv, "host", "drain", "h1", "--no-wait")...)
	if code != 0 || strings.TrimSpace(out) != "d1" {
		t.Errorf("host drain --no-wait: exit %d, %q, want the operation's id", code, out)
	}
}
