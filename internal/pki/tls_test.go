package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve runs a TLS echo-less server on loopback with cfg and returns its
// address. Each connection is handshaken and closed.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if c.(*tls.Conn).Handshake() == nil {
					io.WriteString(c, "hello")
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// dial does a real handshake against addr, presenting serverName (empty:
// none, as when dialling an IP).
func dial(addr, serverName string, cfg *tls.Config) error {
	cfg = cfg.Clone()
	cfg.ServerName = serverName
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	b, err := io.ReadAll(c)
	if err != nil {
		return err
	}
	if string(b) != "hello" {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func setup(t *testing.T, hosts ...string) (dir string, caPEM []byte, addr string) {
	t.Helper()
	dir = t.TempDir()
	if err := EnsureServerCert(dir, hosts); err != nil {
		t.Fatal(err)
	}
	caPEM = mustRead(t, filepath.Join(dir, CACertFile))
	cfg, err := ServerTLSConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	return dir, caPEM, serve(t, cfg)
}

func TestServerTLSConfigChain(t *testing.T) {
	dir, caPEM, _ := setup(t, "localhost")
	cfg, err := ServerTLSConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	chain := cfg.Certificates[0].Certificate
	if len(chain) != 2 {
		t.Fatalf("chain has %d certificates, want 2", len(chain))
	}
	if fingerprintDER(chain[1]) != Fingerprint(caPEM) {
		t.Fatal("last certificate of the chain is not the ca")
	}
	if _, err := ServerTLSConfig(t.TempDir()); err == nil {
		t.Fatal("ServerTLSConfig of an empty dir worked")
	}
}

func TestClientTLSConfig(t *testing.T) {
	_, caPEM, addr := setup(t, "localhost", "127.0.0.1")
	cfg, err := ClientTLSConfig(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(addr, "localhost", cfg); err != nil {
		t.Fatalf("good host: %v", err)
	}
	if err := dial(addr, "127.0.0.1", cfg); err != nil {
		t.Fatalf("good ip: %v", err)
	}
	if err := dial(addr, "evil.example", cfg); err == nil || !strings.Contains(err.Error(), "evil.example") {
		t.Fatalf("wrong host: %v, want a host name error", err)
	}

	_, otherCA, _ := setup(t, "localhost")
	other, _ := ClientTLSConfig(otherCA)
	if err := dial(addr, "localhost", other); err == nil {
		t.Fatal("client trusting another ca connected")
	}
	if _, err := ClientTLSConfig([]byte("junk")); err == nil {
		t.Fatal("ClientTLSConfig accepted junk")
	}
}

func TestPinnedTLSConfig(t *testing.T) {
	dir, caPEM, addr := setup(t, "localhost", "127.0.0.1")
	pin := Fingerprint(caPEM)

	good, err := PinnedTLSConfig(pin)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(addr, "localhost", good); err != nil {
		t.Fatalf("good pin: %v", err)
	}
	if err := dial(addr, "", good); err != nil {
		t.Fatalf("good pin, no server name: %v", err)
	}
	// Upper case with colons, as some tools print fingerprints.
	var colons []string
	for i := 0; i < len(pin); i += 2 {
		colons = append(colons, strings.ToUpper(pin[i:i+2]))
	}
	if cfg, err := PinnedTLSConfig(strings.Join(colons, ":")); err != nil {
		t.Fatal(err)
	} else if err := dial(addr, "localhost", cfg); err != nil {
		t.Fatalf("colon pin: %v", err)
	}

	if err := dial(addr, "evil.example", good); err == nil {
		t.Fatal("good pin but wrong host name connected")
	}

	_, otherCA, _ := setup(t, "localhost")
	wrong, _ := PinnedTLSConfig(Fingerprint(otherCA))
	if err := dial(addr, "localhost", wrong); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("wrong pin: %v, want a mismatch", err)
	}

	// Pinning the leaf instead of the ca is refused.
	leafPin, _ := PinnedTLSConfig(Fingerprint(mustRead(t, filepath.Join(dir, ServerCertFile))))
	if err := dial(addr, "localhost", leafPin); err == nil {
		t.Fatal("leaf pin connected")
	}

	for _, bad := range []string{"", "abc", strings.Repeat("z", 64), pin[:62]} {
		if _, err := PinnedTLSConfig(bad); err == nil {
			t.Errorf("PinnedTLSConfig(%q) accepted", bad)
		}
	}
}

// TestPinnedRejectsForeignLeaf is the attack the pin guards against: a
// server that sends the real CA's certificate (it is public) after a leaf
// signed by its own CA. The fingerprint matches; the signature does not.
func TestPinnedRejectsForeignLeaf(t *testing.T) {
	realDir := t.TempDir()
	realCA, err := EnsureCA(realDir)
	if err != nil {
		t.Fatal(err)
	}
	evilDir := t.TempDir()
	if err := EnsureServerCert(evilDir, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	// Serve the evil leaf followed by the real CA certificate.
	os.WriteFile(filepath.Join(evilDir, CACertFile), realCA, 0o644)
	cfg, err := ServerTLSConfig(evilDir)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, cfg)
	pinned, _ := PinnedTLSConfig(Fingerprint(realCA))
	if err := dial(addr, "localhost", pinned); err == nil {
		t.Fatal("foreign leaf accepted under the pinned ca")
	} else if !strings.Contains(err.Error(), "pinned ca") {
		t.Fatalf("unexpected error: %v", err)
	}
}

// TestPinnedRejectsLeafOnly: a server that does not send its CA cannot be
// matched against the pin.
func TestPinnedRejectsLeafOnly(t *testing.T) {
	dir, caPEM, _ := setup(t, "localhost")
	cfg, _ := ServerTLSConfig(dir)
	cfg.Certificates[0].Certificate = cfg.Certificates[0].Certificate[:1]
	addr := serve(t, cfg)
	pinned, _ := PinnedTLSConfig(Fingerprint(caPEM))
	if err := dial(addr, "localhost", pinned); err == nil {
		t.Fatal("leaf-only chain accepted")
	}
}

// TestPinnedRejectsNonCA: a pinned last certificate that is not a CA is
// refused even when the leaf verifies under it.
func TestPinnedRejectsNonCA(t *testing.T) {
	dir := t.TempDir()
	if err := EnsureServerCert(dir, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	ca, _ := loadCA(dir)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// A second leaf from the same CA, served as if it were the "CA".
	leaf2, err := issueServerCert(ca, key.Public(), []string{"localhost"}, nil, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := ServerTLSConfig(dir)
	cfg.Certificates[0].Certificate[1] = mustDER(t, leaf2)
	addr := serve(t, cfg)
	pinned, _ := PinnedTLSConfig(Fingerprint(leaf2))
	if err := dial(addr, "localhost", pinned); err == nil || !strings.Contains(err.Error(), "not a ca") {
		t.Fatalf("non-ca pin: %v, want refusal", err)
	}
}

func mustDER(t *testing.T, certPEM []byte) []byte {
	t.Helper()
	c, err := parseCert(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c.Raw
}

// TestPinnedHTTPS goes through net/http as the agent will: an https URL
// with an IP address, the pinned config in the transport.
func TestPinnedHTTPS(t *testing.T) {
	dir := t.TempDir()
	if err := EnsureServerCert(dir, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	caPEM := mustRead(t, filepath.Join(dir, CACertFile))
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.TLS, _ = ServerTLSConfig(dir)
	srv.StartTLS()
	defer srv.Close()

	for name, mk := range map[string]func() (*tls.Config, error){
		"pinned": func() (*tls.Config, error) { return PinnedTLSConfig(Fingerprint(caPEM)) },
		"ca":     func() (*tls.Config, error) { return ClientTLSConfig(caPEM) },
	} {
		cfg, err := mk()
		if err != nil {
			t.Fatal(err)
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
		resp, err := c.Get(srv.URL)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok" {
			t.Fatalf("%s: body %q", name, b)
		}
	}
}
