package server

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestClusterLeaderVisible: a lone server wins the election at start: GET
// /v1/cluster names it as the leader, with its URL and term, and the
// leader gauge of /metrics is 1 for it.
func TestClusterLeaderVisible(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Name: "solo", Edge: EdgeConfig{MetricsListen: "127.0.0.1:0"}})
	ctx := context.Background()
	st, err := e.super.ClusterStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Leader == nil || st.Leader.Name != "solo" || st.Leader.URL != e.url || st.Leader.Term <= 0 ||
		st.Leader.LeaderSince.IsZero() || !st.Self.Leader || st.Self.Name != "solo" {
		t.Fatalf("cluster status of a lone server: %+v (leader %+v)", st, st.Leader)
	}
	ctlEventually(t, 10*time.Second, "the leader gauge says so", func() error {
		resp, err := http.Get("http://" + e.s.MetricsAddr().String() + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if want := `polyvisor_controller_leader{server="solo"} 1`; !strings.Contains(string(b), want) {
			return fmt.Errorf("/metrics lacks %q", want)
		}
		return nil
	})
}
