package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/polyvisor/polyvisor/api"
)

// TestConsoleWebsocketAuth: the console websocket, which a browser opens
// with its token as a subprotocol, refuses a request without credentials
// and a user with no access to the VM's project, and lets through one who
// may open consoles there.
func TestConsoleWebsocketAuth(t *testing.T) {
	e := newEnv(t, Config{})
	pem, err := os.ReadFile(e.s.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	dial := func(who, project string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		protos := []string{"binary"}
		if who != "" {
			protos = append(protos, "bearer."+e.tokens[who])
		}
		url := strings.Replace(e.url, "https://", "wss://", 1) + "/v1/vms/vm1/console?type=vnc&project=" + project
		c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc, Subprotocols: protos})
		if err == nil {
			c.CloseNow()
			return http.StatusSwitchingProtocols
		}
		if resp == nil {
			t.Fatalf("dialing as %q: %v", who, err)
		}
		return resp.StatusCode
	}
	cases := []struct {
		who, project string
		want         int
	}{
		{"", "pa", http.StatusUnauthorized},
		{"nobody", "pa", http.StatusNotFound},
		{"bob", "pa", http.StatusNotFound}, // admin of pb only
		{api.RoleViewer, "pa", http.StatusForbidden},
		// Allowed: the VM exists but, on a host the test only speaks
		// for, never runs, so the console is refused as not running.
		{api.RoleOperator, "pa", http.StatusConflict},
	}
	for _, c := range cases {
		if got := dial(c.who, c.project); got != c.want {
			t.Errorf("console of pa/vm1 as %q: %d, want %d", c.who, got, c.want)
		}
	}
	// A bad token offered as a subprotocol is refused like a bad header.
	e.tokens["forged"] = "pva_000000000000_" + strings.Repeat("0", 64)
	if got := dial("forged", "pa"); got != http.StatusUnauthorized {
		t.Errorf("forged token: %d, want 401", got)
	}
}

// TestUIServed: outside /v1 the server answers with the console (or, in a
// binary built without it, says how to build it), with a strict content
// security policy; /v1 paths stay API errors.
func TestUIServed(t *testing.T) {
	e := newEnv(t, Config{})
	status, body, _ := e.do("GET", "/v1/nothing-here", "", nil)
	if status != http.StatusNotFound || !strings.Contains(string(body), `"not_found"`) {
		t.Errorf("GET /v1/nothing-here: %d %s, want the API's 404", status, body)
	}
	req, _ := http.NewRequest("GET", e.url+"/vms/pa/vm1?tab=serial", nil)
	resp, err := e.super.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("no strict CSP on the console: %q", csp)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /vms/pa/vm1: %d", resp.StatusCode)
	}
}
