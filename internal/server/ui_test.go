package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
	"github.com/polyvisor/polyvisor/web"
)

// TestConsoleWebsocketAuth: the console websocket, which a browser opens
// with its token as a subprotocol, refuses a request without credentials
// and a user with no access to the VM's project, and lets through one who
// may open consoles there.
func TestConsoleWebsocketAuth(t *testing.T) {
	t.Parallel()
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

// TestUIServed: outside /v1 the server answers with the console: its
// index.html for the app's own paths, its assets, a 404 for a missing
// asset; in a binary built without the console, a 404 saying how to
// build it. Both with a strict content security policy; /v1 paths stay
// API errors.
func TestUIServed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	status, body, _ := e.do("GET", "/v1/nothing-here", "", nil)
	if status != http.StatusNotFound || !strings.Contains(string(body), `"not_found"`) {
		t.Errorf("GET /v1/nothing-here: %d %s, want the API's 404", status, body)
	}
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := e.super.HTTPClient().Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: reading the body: %v", path, err)
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
			t.Errorf("GET %s: no strict CSP: %q", path, csp)
		}
		return resp, string(b)
	}
	fsys, built := web.Dist()
	if !built {
		peer.Without(t, "the web console is not built (web/dist; scripts/test.sh builds it): only the build hint is checked")
		resp, body := get("/vms/pa/vm1?tab=serial")
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "npm run build") {
			t.Errorf("GET /vms/pa/vm1 without the console: %d %q, want 404 saying how to build it", resp.StatusCode, body)
		}
		return
	}
	index, err := fs.ReadFile(fsys, "index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/", "/vms/pa/vm1?tab=serial", "/hosts"} {
		resp, body := get(path)
		if resp.StatusCode != http.StatusOK || body != string(index) || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
			t.Errorf("GET %s: %d %s, %d bytes; want 200 with the console's index.html (%d bytes)", path, resp.StatusCode, resp.Header.Get("Content-Type"), len(body), len(index))
		}
	}
	assets, err := fs.ReadDir(fsys, "assets")
	if err != nil || len(assets) == 0 {
		t.Fatalf("the built console has no assets: %v", err)
	}
	asset, err := fs.ReadFile(fsys, "assets/"+assets[0].Name())
	if err != nil {
		t.Fatal(err)
	}
	resp, got := get("/assets/" + assets[0].Name())
	if resp.StatusCode != http.StatusOK || got != string(asset) || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Errorf("GET /assets/%s: %d (Cache-Control %q), %d bytes; want 200 with the file (%d bytes), cached for good",
			assets[0].Name(), resp.StatusCode, resp.Header.Get("Cache-Control"), len(got), len(asset))
	}
	if resp, body := get("/assets/no-such-file.js"); resp.StatusCode != http.StatusNotFound || body == string(index) {
		t.Errorf("GET a missing asset: %d, %d bytes; want 404, not the app", resp.StatusCode, len(body))
	}
}
