package client

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// testPKI is a CA and a server certificate for 127.0.0.1 it signed.
type testPKI struct {
	ca     *x509.Certificate
	caPEM  []byte
	server tls.Certificate // its chain holds the CA too
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "polyvisor test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "polyvisor"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"localhost"},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return testPKI{
		ca:     ca,
		caPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		server: tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key},
	}
}

// okHandler answers GET /v1/hosts/h1 with a host.
var okHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/hosts/h1" {
		writeError(w, http.StatusNotFound, api.NotFound("host", r.URL.Path))
		return
	}
	writeJSON(w, 200, api.Host{Meta: api.Meta{Name: "h1"}})
})

func TestTLSWithCA(t *testing.T) {
	pki := newTestPKI(t)
	srv := httptest.NewUnstartedServer(okHandler)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.server}}
	srv.StartTLS()
	defer srv.Close()
	ctx := context.Background()

	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pki.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	for name, cfg := range map[string]Config{
		"CACert":    {URL: srv.URL, CACert: pki.caPEM},
		"CAFile":    {URL: srv.URL, CAFile: caFile},
		"TLSConfig": {URL: srv.URL, TLSConfig: &tls.Config{RootCAs: pool}, CACert: []byte("ignored")},
	} {
		c, err := New(cfg)
		if err != nil {
			t.Fatalf("%s: New: %v", name, err)
		}
		if h, err := c.GetHost(ctx, "h1"); err != nil || h.Name != "h1" {
			t.Errorf("%s: GetHost = %+v, %v", name, h, err)
		}
		c.CloseIdleConnections()
	}

	otherPKI := newTestPKI(t)
	for name, cfg := range map[string]Config{
		"system roots":      {URL: srv.URL},
		"other CA":          {URL: srv.URL, CACert: otherPKI.caPEM},
		"TLSConfig over CA": {URL: srv.URL, TLSConfig: &tls.Config{}, CACert: pki.caPEM},
	} {
		c, err := New(cfg)
		if err != nil {
			t.Fatalf("%s: New: %v", name, err)
		}
		if _, err := c.GetHost(ctx, "h1"); err == nil {
			t.Errorf("%s: an untrusted server was accepted", name)
		}
	}
}

func TestUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "pv")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var host string
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host = r.Host
		okHandler(w, r)
	})}}
	srv.Start()
	defer srv.Close()

	for _, u := range []string{"unix://" + sock, sock} {
		c, err := New(Config{URL: u})
		if err != nil {
			t.Fatal(err)
		}
		if h, err := c.GetHost(context.Background(), "h1"); err != nil || h.Name != "h1" {
			t.Errorf("%s: GetHost = %+v, %v", u, h, err)
		}
		if host != unixHost {
			t.Errorf("Host = %q, want %q", host, unixHost)
		}
		c.CloseIdleConnections()
	}
}

func TestPathPrefixIsKept(t *testing.T) {
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.Path
		writeJSON(w, 200, api.Image{})
	}))
	defer srv.Close()
	c, err := New(Config{URL: srv.URL + "/pv/"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetImage(context.Background(), "deb"); err != nil {
		t.Fatal(err)
	}
	if path != "/pv/v1/images/deb" {
		t.Errorf("path = %q", path)
	}
}
