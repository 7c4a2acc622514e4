package cli

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/server"
)

// TestBalanceCommands: show, set and apply against a real server: the
// mode starts off, set changes only what its flags name and a cycle runs
// at once, bad flags are named, and an unknown recommendation is refused.
func TestBalanceCommands(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{BalanceTick: 50 * time.Millisecond})
	out, errOut, code := cli(t, "", rs.asRoot("balance", "show")...)
	if code != ExitOK || !strings.Contains(out, "Mode:") || !strings.Contains(out, "off") || !strings.Contains(out, "No recommendations.") {
		t.Fatalf("balance show: exit %d: %s%s", code, out, errOut)
	}
	out, errOut, code = cli(t, "", rs.asRoot("balance", "set", "--mode", "advise", "--interval", "2s", "--aggressiveness", "4")...)
	if code != ExitOK || !strings.Contains(out, "advise") || !strings.Contains(out, "4 of 5") {
		t.Fatalf("balance set: exit %d: %s%s", code, out, errOut)
	}
	deadline := time.Now().Add(20 * time.Second)
	var b api.Balance
	for {
		out, errOut, code = cli(t, "", rs.asRoot("-o", "json", "balance", "show")...)
		if code != ExitOK {
			t.Fatalf("balance show -o json: exit %d: %s", code, errOut)
		}
		if err := json.Unmarshal([]byte(out), &b); err != nil {
			t.Fatalf("balance show -o json: %v\n%s", err, out)
		}
		if b.LastCycle != nil && b.LastCycle.Mode == api.BalanceAdvise {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no advise cycle recorded: %+v", b.LastCycle)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if b.Settings.IntervalSeconds != 2 || b.Settings.MaxMoves != api.DefaultBalanceMaxMoves {
		t.Errorf("settings %+v, cycle %+v", b.Settings, b.LastCycle)
	}
	// Only the flags given change.
	if _, errOut, code = cli(t, "", rs.asRoot("balance", "set", "--max-moves", "2")...); code != ExitOK {
		t.Fatalf("balance set --max-moves: %s", errOut)
	}
	out, _, _ = cli(t, "", rs.asRoot("-o", "json", "balance", "show")...)
	if err := json.Unmarshal([]byte(out), &b); err != nil || b.Settings.Mode != api.BalanceAdvise || b.Settings.MaxMoves != 2 || b.Settings.Aggressiveness != 4 {
		t.Errorf("after --max-moves 2: %+v, %v", b.Settings, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--mode", "sometimes"}, "--mode"},
		{[]string{"--aggressiveness", "9"}, "--aggressiveness"},
		{[]string{"--hotspot-threshold", "2"}, "--hotspot-threshold"},
		{[]string{"--interval", "500ms"}, "--interval"},
		{nil, "give at least one"},
	} {
		_, errOut, code := cli(t, "", rs.asRoot(append([]string{"balance", "set"}, c.args...)...)...)
		if code == ExitOK || !strings.Contains(errOut, c.want) {
			t.Errorf("balance set %v: exit %d, stderr %q, want it to name %s", c.args, code, errOut, c.want)
		}
	}
	if _, errOut, code := cli(t, "", rs.asRoot("balance", "apply", "0123456789ab")...); code == ExitOK || !strings.Contains(errOut, "not found") {
		t.Errorf("balance apply of an unknown id: exit %d, %q", code, errOut)
	}
}
