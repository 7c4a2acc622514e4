// Package pki makes and loads the server's TLS material: a private CA,
// generated at first start, and a server certificate it signs. Agents and
// clients trust the server either through the CA file or, before they
// have it, by pinning the CA's SHA-256 fingerprint.
//
// Files in the directory: ca.crt, ca.key, server.crt, server.key (keys
// 0600). Keys are ECDSA P-256.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// File names in the PKI directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
	// PeerCertFile and PeerKeyFile are the certificate the server's etcd
	// member presents to its peers, as a server and as a client.
	PeerCertFile = "peer.crt"
	PeerKeyFile  = "peer.key"
)

// leafKind says which certificate of the directory is meant.
type leafKind struct {
	what          string // for messages
	certFile, key string
	extKeyUsages  []x509.ExtKeyUsage
}

var (
	serverLeaf = leafKind{what: "server", certFile: ServerCertFile, key: ServerKeyFile,
		extKeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	peerLeaf = leafKind{what: "etcd peer", certFile: PeerCertFile, key: PeerKeyFile,
		extKeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
)

const (
	caValidity     = 10 * 365 * 24 * time.Hour
	serverValidity = 365 * 24 * time.Hour
	// renewBefore re-issues a server certificate this long before it expires.
	renewBefore = 30 * 24 * time.Hour
	// backdate covers clocks slightly behind ours.
	backdate = 5 * time.Minute
)

// logger is the package's sub-logger, taken from slog.Default at each
// use so that a default set later by main applies.
func logger() *slog.Logger { return slog.Default().With("component", "pki") }

// EnsureCA loads the CA from dir, or creates it (and dir) when neither
// ca.crt nor ca.key exists, and returns the CA certificate in PEM. An
// existing CA that is incomplete, damaged or expired is an error: it is
// never replaced silently, since every agent trusts it.
func EnsureCA(dir string) ([]byte, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certOK, keyOK := exists(certPath), exists(keyPath)
	if certOK || keyOK {
		if !certOK || !keyOK {
			return nil, fmt.Errorf("loading ca in %s: only one of %s and %s exists", dir, CACertFile, CAKeyFile)
		}
		ca, err := loadCA(dir)
		if err != nil {
			return nil, err
		}
		return ca.certPEM, nil
	}

	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating pki directory: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating ca key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Polyvisor CA " + serial.Text(16)[:8], Organization: []string{"Polyvisor"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("creating ca certificate: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// The key goes first: a crash between the two writes leaves a key
	// without a certificate, which the next start reports, never a
	// certificate whose key is lost.
	if err := writeKey(keyPath, key); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("writing ca certificate: %w", err)
	}
	logger().Info("created ca", "dir", dir, "fingerprint", Fingerprint(certPEM))
	return certPEM, nil
}

// EnsureServerCert makes sure dir holds a server certificate, signed by
// the CA of dir, valid for every name in hosts (DNS names and IP
// addresses, without ports). It creates the CA first if needed. An
// existing certificate is kept unless it is missing, damaged, not signed
// by the CA, within 30 days of expiry, or lacks one of hosts; a new one
// then covers exactly hosts.
func EnsureServerCert(dir string, hosts []string) error {
	_, err := ensureServerCert(dir, hosts, CertOptions{}, time.Now())
	return err
}

// CertOptions set the life of server certificates; zero fields take the
// defaults.
type CertOptions struct {
	// Validity is how long a new server certificate is valid (default
	// 365 days).
	Validity time.Duration
	// RenewBefore re-issues a certificate this long before it expires
	// (default 30 days). It must be shorter than Validity.
	RenewBefore time.Duration
}

func (o CertOptions) withDefaults() (CertOptions, error) {
	if o.Validity == 0 {
		o.Validity = serverValidity
	}
	if o.RenewBefore == 0 {
		o.RenewBefore = min(renewBefore, o.Validity/2)
	}
	if o.Validity < 0 || o.RenewBefore < 0 || o.RenewBefore >= o.Validity {
		return o, fmt.Errorf("server certificate life: renewal %s before expiry must be shorter than the validity %s", o.RenewBefore, o.Validity)
	}
	return o, nil
}

// ensureServerCert is EnsureServerCert with the certificate's life given;
// it returns why it issued a new certificate, or "" when it kept the one
// in dir.
func ensureServerCert(dir string, hosts []string, opts CertOptions, now time.Time) (string, error) {
	return ensureLeaf(serverLeaf, dir, hosts, opts, now)
}

// EnsurePeerCert makes sure dir holds a certificate for the server's etcd
// member, signed by the CA of dir, valid for every name in hosts and for
// both ends of a peer connection; it is re-issued under the same rules as
// the server certificate. It returns why it issued one ("" when it kept
// the one in dir).
func EnsurePeerCert(dir string, hosts []string, opts CertOptions) (string, error) {
	return ensureLeaf(peerLeaf, dir, hosts, opts, time.Now())
}

func ensureLeaf(kind leafKind, dir string, hosts []string, opts CertOptions, now time.Time) (string, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return "", err
	}
	names, ips, err := splitHosts(hosts)
	if err != nil {
		return "", err
	}
	if _, err := EnsureCA(dir); err != nil {
		return "", err
	}
	ca, err := loadCA(dir)
	if err != nil {
		return "", err
	}
	reason := checkLeaf(kind, dir, ca, hosts, now, opts.RenewBefore)
	if reason == "" {
		return "", nil
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", fmt.Errorf("generating %s key: %w", kind.what, err)
	}
	certPEM, err := issueLeaf(kind, ca, key.Public(), names, ips, now, opts.Validity)
	if err != nil {
		return "", err
	}
	if err := writeKey(filepath.Join(dir, kind.key), key); err != nil {
		return "", err
	}
	if err := writeFileAtomic(filepath.Join(dir, kind.certFile), certPEM, 0o644); err != nil {
		return "", fmt.Errorf("writing %s certificate: %w", kind.what, err)
	}
	logger().Info("issued "+kind.what+" certificate", "dir", dir, "reason", reason, "dns", names, "ips", ips,
		"expires", now.Add(opts.Validity).UTC().Format(time.RFC3339))
	return reason, nil
}

// ca is a loaded CA.
type ca struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
}

func loadCA(dir string) (*ca, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("loading ca certificate: %w", err)
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("loading ca certificate: %w", err)
	}
	key, err := readKey(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, fmt.Errorf("loading ca key: %w", err)
	}
	switch {
	case !cert.IsCA:
		return nil, fmt.Errorf("loading ca: %s is not a ca certificate", CACertFile)
	case !publicKeysEqual(cert.PublicKey, key.Public()):
		return nil, fmt.Errorf("loading ca: %s does not match %s", CAKeyFile, CACertFile)
	case time.Now().After(cert.NotAfter):
		return nil, fmt.Errorf("loading ca: certificate expired on %s", cert.NotAfter.Format(time.DateOnly))
	}
	return &ca{cert: cert, key: key, certPEM: certPEM}, nil
}

// checkServerCert says why the server certificate in dir must be
// re-issued, or "" when it is good.
func checkServerCert(dir string, ca *ca, hosts []string, now time.Time, renewBefore time.Duration) string {
	return checkLeaf(serverLeaf, dir, ca, hosts, now, renewBefore)
}

// checkLeaf says why a certificate of dir must be re-issued, or "" when
// it is good.
func checkLeaf(kind leafKind, dir string, ca *ca, hosts []string, now time.Time, renewBefore time.Duration) string {
	certPEM, err := os.ReadFile(filepath.Join(dir, kind.certFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "none yet"
	}
	if err != nil {
		return "unreadable: " + err.Error()
	}
	cert, err := parseCert(certPEM)
	if err != nil {
		return "damaged: " + err.Error()
	}
	key, err := readKey(filepath.Join(dir, kind.key))
	if err != nil {
		return "key unusable: " + err.Error()
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return "key does not match"
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	for _, eku := range kind.extKeyUsages {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{eku}}); err != nil {
			return "not valid under the ca: " + err.Error()
		}
	}
	if now.Add(renewBefore).After(cert.NotAfter) {
		return "expires on " + cert.NotAfter.Format(time.DateOnly)
	}
	for _, h := range hosts {
		if err := cert.VerifyHostname(strings.TrimSpace(h)); err != nil {
			return fmt.Sprintf("does not cover %q", h)
		}
	}
	return ""
}

func issueServerCert(ca *ca, pub crypto.PublicKey, names []string, ips []net.IP, now time.Time, validity time.Duration) ([]byte, error) {
	return issueLeaf(serverLeaf, ca, pub, names, ips, now, validity)
}

func issueLeaf(kind leafKind, ca *ca, pub crypto.PublicKey, names []string, ips []net.IP, now time.Time, validity time.Duration) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	cn := "polyvisor"
	if len(names) > 0 {
		cn = names[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"Polyvisor"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           kind.extKeyUsages,
		BasicConstraintsValid: true,
		DNSNames:              names,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("creating %s certificate: %w", kind.what, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// splitHosts sorts hosts into DNS names and IP addresses, dropping
// duplicates.
func splitHosts(hosts []string) ([]string, []net.IP, error) {
	var names []string
	var ips []net.IP
	for _, h := range hosts {
		h = strings.TrimSpace(h)
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			continue
		}
		if strings.ContainsAny(h, ":/ []") {
			return nil, nil, fmt.Errorf("server certificate host %q: want a dns name or an ip address without a port", h)
		}
		h = strings.ToLower(h)
		if !slices.Contains(names, h) {
			names = append(names, h)
		}
	}
	if len(names) == 0 && len(ips) == 0 {
		return nil, nil, errors.New("server certificate needs at least one host name or ip address")
	}
	return names, ips, nil
}

func parseCert(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no pem certificate found")
	}
	return x509.ParseCertificate(block.Bytes)
}

func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no pem key found", filepath.Base(path))
	}
	var key any
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: unexpected pem block %q", filepath.Base(path), block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: key of type %T cannot sign", filepath.Base(path), key)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		logger().Warn("private key readable by others; restricting to 0600", "path", path)
		if err := os.Chmod(path, 0o600); err != nil {
			return nil, fmt.Errorf("restricting permissions of %s: %w", filepath.Base(path), err)
		}
	}
	return signer, nil
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", filepath.Base(path), err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := writeFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, synced and renamed over path, so that a crash leaves either
// the old file or the new one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	if d, derr := os.Open(dir); derr == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil // never zero
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
