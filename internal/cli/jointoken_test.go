package cli

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/server"
)

// The agent command join-token prints names the server's real address,
// and an agent that runs it reaches and trusts the server.
func TestJoinTokenPrintsTheServersURL(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{Listen: "127.0.0.2:0"})
	// Asked over the socket, which is no address for another machine.
	out, errOut, code := cli(t, "", rs.asRoot("host", "join-token")...)
	url := "https://127.0.0.2:" + strconv.Itoa(rs.port)
	m := regexp.MustCompile(`polyvisor agent --server (\S+) --join-token (\S+)\n`).FindStringSubmatch(out)
	if code != ExitOK || m == nil || m[1] != url || strings.Contains(out, "SERVER") {
		t.Fatalf("join-token: exit %d, want --server %s:\n%s%s", code, url, out, errOut)
	}
	// The address is loopback: an agent elsewhere cannot use it.
	if !strings.Contains(out, "loopback address") || !strings.Contains(out, "--advertise-address") {
		t.Errorf("no note on the loopback address:\n%s", out)
	}
	// What the agent does with the command: pin the CA of the token, and
	// register at the URL.
	_, fp := server.SplitJoinToken(m[2])
	tc, err := pki.PinnedTLSConfig(fp)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{URL: m[1], TLSConfig: tc})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	creds, err := c.Register(ctx, api.AgentRegister{JoinToken: m[2], Host: "h2", Status: api.HostStatus{State: api.HostReady}})
	if err != nil {
		t.Fatalf("an agent registering at the printed URL: %v", err)
	}
	// From then on the agent trusts the CA it was given, and checks that
	// the server's certificate holds the URL's host.
	c, err = client.New(client.Config{URL: m[1], Token: creds.Token, CACert: []byte(creds.CACert)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutHostStatus(ctx, "h2", api.HostStatus{State: api.HostReady, CPUs: 1}); err != nil {
		t.Errorf("the agent reporting at the printed URL: %v", err)
	}

	// An advertised name comes first; the JSON answer carries it too.
	rs2 := startRealServer(t, server.Config{AdvertiseAddresses: []string{"pv.example.com"}})
	out, errOut, code = cli(t, "", rs2.asRoot("host", "join-token")...)
	want := "polyvisor agent --server https://pv.example.com:" + strconv.Itoa(rs2.port) + " --join-token pvj_"
	if code != ExitOK || !strings.Contains(out, want) || strings.Contains(out, "loopback") {
		t.Errorf("join-token with an advertised name: exit %d, want %q:\n%s%s", code, want, out, errOut)
	}
	out, _, _ = cli(t, "", rs2.asRoot("-o", "json", "host", "join-token")...)
	if !strings.Contains(out, `"serverURL": "https://pv.example.com:`+strconv.Itoa(rs2.port)+`"`) {
		t.Errorf("join-token -o json has no serverURL:\n%s", out)
	}
}
