package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/server"
)

// TestClusterStatus: one server wins the election at start; cluster
// status names it as the leader, with its URL and term, and says it
// answered itself.
func TestClusterStatus(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{Name: "alpha"})
	var st api.ClusterStatus
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, errOut, code := cli(t, "", rs.asRoot("-o", "json", "cluster", "status")...)
		if code != ExitOK {
			t.Fatalf("cluster status: exit %d: %s", code, errOut)
		}
		st = api.ClusterStatus{}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("cluster status -o json: %v\n%s", err, out)
		}
		// A term is whole once its leader has proclaimed when it began
		// (LeaderSince); until then the store names a leader without it.
		if (st.Leader != nil && !st.Leader.LeaderSince.IsZero()) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if st.Leader == nil || st.Leader.Name != "alpha" || st.Leader.URL != rs.url ||
		st.Leader.Term <= 0 || st.Leader.LeaderSince.IsZero() || !st.Self.Leader || st.Self.Name != "alpha" {
		t.Fatalf("cluster status of a lone server: %+v (leader %+v)", st, st.Leader)
	}
	out, errOut, code := cli(t, "", rs.asRoot("cluster", "status")...)
	for _, want := range []string{"Leader:", "alpha", "Term:", "Answered by:", "(the leader)"} {
		if code != ExitOK || !strings.Contains(out, want) {
			t.Errorf("cluster status lacks %q: exit %d\n%s%s", want, code, out, errOut)
		}
	}
}
