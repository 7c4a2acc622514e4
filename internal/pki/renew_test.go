package pki

import (
	"context"
	"crypto/tls"
	"math/big"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// handshake dials addr with cfg and returns the leaf the server presented.
func handshake(addr string, cfg *tls.Config) (serial *big.Int, notAfter time.Time, err error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, time.Time{}, err
	}
	defer c.Close()
	leaf := c.ConnectionState().PeerCertificates[0]
	return leaf.SerialNumber, leaf.NotAfter, nil
}

// TestServerCertRenewsWhileServing issues a certificate that lives three
// seconds and serves it: the running server must renew it before it
// expires, and clients that trust the CA file or pin the CA's fingerprint
// (as agents do) must keep connecting past the first one's expiry.
func TestServerCertRenewsWhileServing(t *testing.T) {
	dir := t.TempDir()
	sc, err := NewServerCert(dir, []string{"localhost", "127.0.0.1"}, CertOptions{Validity: 3 * time.Second, RenewBefore: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, sc.TLSConfig())
	caPEM := mustRead(t, filepath.Join(dir, CACertFile))
	byCA, err := ClientTLSConfig(caPEM)
	if err != nil {
		t.Fatal(err)
	}
	byCA.ServerName = "localhost"
	pinned, err := PinnedTLSConfig(Fingerprint(caPEM))
	if err != nil {
		t.Fatal(err)
	}
	first, firstExpiry, err := handshake(addr, byCA)
	if err != nil {
		t.Fatalf("first handshake: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sc.Run(ctx)

	// Past the first certificate's expiry, both kinds of client still
	// connect, and see a newer certificate that is still valid.
	time.Sleep(time.Until(firstExpiry) + 500*time.Millisecond)
	for name, cfg := range map[string]*tls.Config{"ca file": byCA, "pinned ca": pinned} {
		serial, notAfter, err := handshake(addr, cfg)
		if err != nil {
			t.Fatalf("%s: handshake after the first certificate expired: %v", name, err)
		}
		if serial.Cmp(first) == 0 {
			t.Errorf("%s: still served the first certificate (serial %x)", name, serial)
		}
		if !notAfter.After(time.Now()) {
			t.Errorf("%s: served a certificate that expired at %s", name, notAfter)
		}
	}
	// The renewed certificate is on disk for the next start.
	if got := mustCert(t, filepath.Join(dir, ServerCertFile)); got.SerialNumber.Cmp(first) == 0 {
		t.Error("server.crt still holds the first certificate")
	}
}

func TestCertOptionsRefuseRenewalAfterExpiry(t *testing.T) {
	_, err := NewServerCert(t.TempDir(), []string{"localhost"}, CertOptions{Validity: time.Hour, RenewBefore: 2 * time.Hour})
	if err == nil || !strings.Contains(err.Error(), "must be shorter than the validity") {
		t.Fatalf("err = %v, want a refusal naming the renewal window", err)
	}
}

// cbcSuites are the TLS 1.2 CBC suites Go's client still offers when asked.
var cbcSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// TestServerRefusesCBCAndOldTLS: a client offering only CBC suites under
// TLS 1.2, or only TLS 1.1, gets no connection; one offering an AEAD
// suite under TLS 1.2 does.
func TestServerRefusesCBCAndOldTLS(t *testing.T) {
	dir := t.TempDir()
	sc, err := NewServerCert(dir, []string{"localhost"}, CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	static, err := ServerTLSConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := mustRead(t, filepath.Join(dir, CACertFile))
	for name, cfg := range map[string]*tls.Config{"renewing": sc.TLSConfig(), "static": static} {
		addr := serve(t, cfg)
		client := func(mod func(*tls.Config)) error {
			c, err := ClientTLSConfig(caPEM)
			if err != nil {
				t.Fatal(err)
			}
			c.CipherSuites = nil
			mod(c)
			return dial(addr, "localhost", c)
		}
		if err := client(func(c *tls.Config) { c.MaxVersion, c.CipherSuites = tls.VersionTLS12, cbcSuites }); err == nil {
			t.Errorf("%s: a TLS 1.2 client offering only CBC suites connected", name)
		}
		if err := client(func(c *tls.Config) { c.MinVersion, c.MaxVersion = tls.VersionTLS11, tls.VersionTLS11 }); err == nil {
			t.Errorf("%s: a TLS 1.1 client connected", name)
		}
		if err := client(func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
		}); err != nil {
			t.Errorf("%s: a TLS 1.2 client offering AES-GCM: %v", name, err)
		}
		if err := client(func(c *tls.Config) {
			c.MaxVersion, c.CipherSuites = tls.VersionTLS12, []uint16{tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256}
		}); err != nil {
			t.Errorf("%s: a TLS 1.2 client offering ChaCha20-Poly1305: %v", name, err)
		}
	}
}

// TestServerRefusesCBCFromOpenSSL does the same with OpenSSL's client, a
// TLS stack other than Go's.
func TestServerRefusesCBCFromOpenSSL(t *testing.T) {
	peer.Binary(t, "openssl", "apt-get install openssl")
	dir := t.TempDir()
	sc, err := NewServerCert(dir, []string{"localhost"}, CertOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, sc.TLSConfig())
	sClient := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "openssl", append([]string{"s_client", "-connect", addr, "-servername", "localhost",
			"-CAfile", filepath.Join(dir, CACertFile), "-verify_return_error"}, args...)...)
		cmd.Stdin = strings.NewReader("")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := sClient("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:AES128-SHA:AES256-SHA"); err == nil {
		t.Errorf("openssl offering only CBC suites under TLS 1.2 connected:\n%s", out)
	}
	for _, suite := range []string{"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305"} {
		if out, err := sClient("-tls1_2", "-cipher", suite); err != nil || !strings.Contains(out, "Cipher is "+suite) {
			t.Errorf("openssl offering %s under TLS 1.2: %v\n%s", suite, err, out)
		}
	}
}
