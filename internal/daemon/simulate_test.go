package daemon

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// The join tokens of a fleet come from a file, one per line, or from the
// one --join-token; both at once, or tokens of different control planes,
// are refused naming the flag.
func TestSimulateJoinTokens(t *testing.T) {
	fp1, fp2 := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	p := filepath.Join(t.TempDir(), "tokens")
	if err := os.WriteFile(p, []byte("# made for the fleet\npvj_a."+fp1+"\n\n  pvj_b."+fp1+"  \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := simulateJoinTokens(p, "")
	if err != nil || !slices.Equal(got, []string{"pvj_a." + fp1, "pvj_b." + fp1}) {
		t.Fatalf("tokens from the file: %q %v", got, err)
	}
	if _, err := pinnedJoinTLS(got); err != nil {
		t.Errorf("tokens of one CA: %v", err)
	}
	if got, err := simulateJoinTokens("", "pvj_c."+fp1); err != nil || len(got) != 1 {
		t.Errorf("one --join-token: %q %v", got, err)
	}
	if _, err := simulateJoinTokens(p, "pvj_c."+fp1); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("file and token: %v", err)
	}
	if _, err := simulateJoinTokens(filepath.Join(t.TempDir(), "none"), ""); err == nil || !strings.Contains(err.Error(), "--join-token-file") {
		t.Errorf("missing file: %v", err)
	}
	if _, err := pinnedJoinTLS([]string{"pvj_a." + fp1, "pvj_b." + fp2}); err == nil || !strings.Contains(err.Error(), "token 2 names another CA") {
		t.Errorf("tokens of two CAs: %v", err)
	}
	if _, err := pinnedJoinTLS([]string{"pvj_a"}); err == nil || !strings.Contains(err.Error(), "no CA fingerprint") {
		t.Errorf("a token without fingerprint: %v", err)
	}
}

// agent --simulate refuses bad flags before it starts anything, naming
// the flag.
func TestAgentSimulateFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--simulate", "3"}, "--server"},
		{[]string{"--simulate", "3", "--server", "https://127.0.0.1:1", "--simulate-profile", "kvm"}, "--simulate-profile"},
		{[]string{"--simulate", "3", "--server", "https://127.0.0.1:1", "--simulate-source-addresses", "mine"}, "--simulate-source-addresses"},
		{[]string{"--simulate", "3", "--server", "https://127.0.0.1:1"}, "3 hosts have not joined and 0 join tokens"},
		{[]string{"--simulate", "2", "--server", "https://127.0.0.1:1", "--simulate-prefix", "Bad_"}, "not a valid host name"},
		{[]string{"--simulate", "1", "--server", "https://127.0.0.1:1", "--debug-pprof-listen", "0.0.0.0:6060", "--join-token", "pvj_a." + strings.Repeat("ab", 32)}, "loopback"},
	} {
		refusedFlags(t, AgentCommand, c.args, c.want)
	}
}

// server refuses bad flags before it starts anything, naming the flag.
func TestServerFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--placement-sample-percent", "101"}, "--placement-sample-percent"},
		{[]string{"--placement-sample-percent", "-1"}, "--placement-sample-percent"},
		{[]string{"--audit-when-full", "drop"}, "--audit-when-full"},
	} {
		refusedFlags(t, ServerCommand, c.args, c.want)
	}
}

// refusedFlags runs the command made by newCmd with args (and a data dir
// of its own) and wants it refused with an error that says want.
func refusedFlags(t *testing.T, newCmd func() *cobra.Command, args []string, want string) {
	t.Helper()
	cmd := newCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append(args, "--data-dir", t.TempDir()))
	ctx, cancel := context.WithCancel(context.Background())
	err := cmd.ExecuteContext(ctx)
	cancel()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("%s %s: %v, want %q", cmd.Name(), strings.Join(args, " "), err, want)
	}
}
