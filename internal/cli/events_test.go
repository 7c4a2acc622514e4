package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/server"
)

// TestEventsFollowsFromARevision: `events --since` replays what changed
// after a revision, in order and with revisions, as JSON lines; a bad
// type or a revision not reached yet is refused, naming what is wrong.
func TestEventsFollowsFromARevision(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{Name: "alpha"})
	for _, n := range []string{"web", "db"} {
		if _, errOut, code := cli(t, "", rs.asRoot("network", "create", n)...); code != ExitOK {
			t.Fatalf("network create %s: exit %d: %s", n, code, errOut)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	code := run(ctx, NewRootCommand(), rs.asRoot("events", "--since", "1", "--type", "network", "-o", "json"), strings.NewReader(""), &out, &errOut)
	if code != ExitOK {
		t.Fatalf("events: exit %d: %s", code, errOut.String())
	}
	var names []string
	var last int64
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var ev api.Event
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("events -o json line %q: %v", line, err)
		}
		if ev.Type != api.EventNetwork || ev.Revision <= last {
			t.Fatalf("event %+v after revision %d: want network events in revision order", ev, last)
		}
		last = ev.Revision
		names = append(names, ev.Object.Name)
	}
	if strings.Join(names, ",") != "web,db" {
		t.Fatalf("events replayed %v, want web, db", names)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"events", "--type", "bogus"}, "bogus"},
		{[]string{"events", "--since", "999999999"}, "since"},
	} {
		if _, errOut, code := cli(t, "", rs.asRoot(c.args...)...); code == ExitOK || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, %q; want a refusal naming %q", c.args, code, errOut, c.want)
		}
	}
}
