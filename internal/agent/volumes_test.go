package agent

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// TestPoolReportsDoNotFeedBack: the server writes each pool report into
// the pool, and the watch sends the pool back; that echo must not make the
// agent report again, or host and server spin.
func TestPoolReportsDoNotFeedBack(t *testing.T) {
	var vs *volumes
	var reports atomic.Int64
	pool := &api.Pool{Meta: api.Meta{Name: "p", Generation: 1}, Spec: api.PoolSpec{Kind: api.PoolDir, Path: filepath.Join(t.TempDir(), "p"), Hosts: []string{"h1"}}}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/agent/hosts/{name}/pools/{pool}", func(w http.ResponseWriter, r *http.Request) {
		var st api.PoolHostStatus
		if err := json.NewDecoder(r.Body).Decode(&st); err != nil || st.TotalMiB <= 0 {
			t.Errorf("pool report %+v, %v", st, err)
		}
		reports.Add(1)
		// As the server: the pool's status changes, its generation not.
		echo := *pool
		echo.Status.Hosts = []api.PoolHostStatus{st}
		go vs.pool(&echo)
		w.WriteHeader(http.StatusNoContent)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c, err := client.New(client.Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	a := &Agent{cfg: Config{Host: "h1"}, c: c, log: slog.Default()}
	vs = newVolumes(a)
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	vs.pool(pool)
	vs.run(ctx)
	if n := reports.Load(); n != 1 {
		t.Fatalf("%d pool reports in 1.5 s, want 1 (then one every 30 s)", n)
	}
}
