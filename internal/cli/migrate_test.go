package cli

import (
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
	f.HandleFunc("POST /v1/hosts/{name}/drain", func(w http.ResponseWriter, r *http.Request) {
		d := api.HostDrain{Host: r.PathValue("name"), Moves: []api.DrainMove{
			{VM: "default/a", Target: "h2", Operation: "op2", Outcome: "migrated"},
		}}
		if r.PathValue("name") == "h9" {
			d.Moves = append(d.Moves, api.DrainMove{VM: "default/b", Outcome: api.OpFailed, Error: "vm \"b\" is paused"})
		}
		reply(w, http.StatusOK, d)
	})
	f.operations(
		api.Operation{ID: "op1", Kind: api.OpVMMigrate, Target: api.Ref{Kind: "vm", Name: "web1"}, Status: api.OpRunning},
		api.Operation{ID: "op1", Kind: api.OpVMMigrate, Target: api.Ref{Kind: "vm", Name: "web1"}, Status: api.OpSucceeded},
	)
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
	if code != 0 || !strings.Contains(out, "default/a") || !strings.Contains(out, "migrated") || !strings.Contains(errOut, "drained") {
		t.Errorf("host drain: exit %d\n%s\n%s", code, out, errOut)
	}
	out, errOut, code = cli(t, "", append(srv, "host", "drain", "h9")...)
	if code == 0 || !strings.Contains(out, "is paused") || !strings.Contains(errOut, "1 of 2 VM(s) did not move") {
		t.Errorf("host drain with a vm that stays: exit %d\n%s\n%s", code, out, errOut)
	}
}
