package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// ServerCert serves the server certificate of a PKI directory and renews
// it before it expires, while the server runs: handshakes get the current
// certificate through GetCertificate, and Run re-issues it (under the same
// CA, so clients that trust the CA or pin its fingerprint keep working)
// once it is within CertOptions.RenewBefore of its expiry, or when it no
// longer covers the server's names.
type ServerCert struct {
	dir   string
	hosts []string
	opts  CertOptions

	mu  sync.Mutex // serialises renewals
	cur atomic.Pointer[tls.Certificate]
}

// NewServerCert makes sure dir holds a CA and a good server certificate
// for hosts (see EnsureServerCert), and loads it.
func NewServerCert(dir string, hosts []string, opts CertOptions) (*ServerCert, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &ServerCert{dir: dir, hosts: append([]string(nil), hosts...), opts: opts}
	if _, err := c.Renew(time.Now()); err != nil {
		return nil, err
	}
	return c, nil
}

// GetCertificate returns the current certificate, for tls.Config.
func (c *ServerCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cur.Load(), nil
}

// Leaf is the current server certificate.
func (c *ServerCert) Leaf() *x509.Certificate { return c.cur.Load().Leaf }

// Renew re-issues the certificate when it is due at now (near expiry,
// damaged, or missing a name) and loads what dir holds when that differs
// from what is served. It tells whether a new certificate was issued.
func (c *ServerCert) Renew(now time.Time) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	reason, err := ensureServerCert(c.dir, c.hosts, c.opts, now)
	if err != nil {
		return false, fmt.Errorf("renewing the server certificate: %w", err)
	}
	// Nothing issued and nothing changed in dir: keep what is served. (A
	// certificate put in dir by hand is picked up here.)
	if cur := c.cur.Load(); reason == "" && cur != nil && sameFile(c.dir, cur) {
		return false, nil
	}
	pair, err := loadServerPair(c.dir)
	if err != nil {
		return false, err
	}
	c.cur.Store(pair)
	return reason != "", nil
}

// sameFile tells whether the certificate in dir is the one served.
func sameFile(dir string, cur *tls.Certificate) bool {
	cert, err := readCertFile(filepath.Join(dir, ServerCertFile))
	return err == nil && len(cur.Certificate) > 0 && string(cert.Raw) == string(cur.Certificate[0])
}

// CheckInterval is how often Run looks at the certificate: often enough
// to renew well inside the RenewBefore window, at most hourly.
func (c *ServerCert) CheckInterval() time.Duration {
	return min(max(c.opts.RenewBefore/8, 50*time.Millisecond), time.Hour)
}

// Run renews the certificate whenever it is due, until ctx ends. A failed
// renewal is logged and tried again at the next check; the certificate in
// use stays served meanwhile.
func (c *ServerCert) Run(ctx context.Context) {
	t := time.NewTicker(c.CheckInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			renewed, err := c.Renew(now)
			switch {
			case err != nil:
				level := "renewal failed; the current certificate stays in use"
				if leaf := c.Leaf(); leaf != nil && now.After(leaf.NotAfter) {
					level = "renewal failed and the served certificate has expired"
				}
				logger().Error(level, "err", err)
			case renewed:
				logger().Info("renewed the server certificate", "expires", c.Leaf().NotAfter.UTC().Format(time.RFC3339))
			}
		}
	}
}

// TLSConfig is the server's TLS configuration: TLS 1.2 at least, only
// AEAD cipher suites with forward secrecy under TLS 1.2 (TLS 1.3 has no
// others), and the current certificate at every handshake.
func (c *ServerCert) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   AEADCipherSuites(),
		GetCertificate: c.GetCertificate,
	}
}

// AEADCipherSuites are the TLS 1.2 suites Polyvisor accepts: ECDHE key
// exchange with AES-GCM or ChaCha20-Poly1305. CBC suites (padding-oracle
// prone: Lucky13 and kin) and static RSA key exchange are left out.
func AEADCipherSuites() []uint16 {
	return []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	}
}
