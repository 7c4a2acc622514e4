package pki

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Fingerprint returns the lowercase hex SHA-256 of the DER encoding of the
// first certificate in certPEM, or "" when certPEM holds no certificate.
func Fingerprint(certPEM []byte) string {
	for {
		var block *pem.Block
		block, certPEM = pem.Decode(certPEM)
		if block == nil {
			return ""
		}
		if block.Type == "CERTIFICATE" {
			return fingerprintDER(block.Bytes)
		}
	}
}

func fingerprintDER(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// ServerTLSConfig loads the server certificate and key from dir and
// returns a server configuration that presents the chain [server
// certificate, CA certificate], so that a client pinning the CA's
// fingerprint sees the CA. Call EnsureServerCert first. The certificate is
// fixed; a server that runs for long uses ServerCert, which renews it.
func ServerTLSConfig(dir string) (*tls.Config, error) {
	pair, err := loadServerPair(dir)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: AEADCipherSuites(),
		Certificates: []tls.Certificate{*pair},
	}, nil
}

// loadServerPair loads the server certificate and key of dir with the CA
// certificate after it.
func loadServerPair(dir string) (*tls.Certificate, error) {
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile))
	if err != nil {
		return nil, fmt.Errorf("loading server certificate: %w", err)
	}
	caCert, err := readCertFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, fmt.Errorf("loading ca certificate: %w", err)
	}
	// server.crt holds only the leaf; drop anything else so the CA is
	// sent exactly once, last.
	pair.Certificate = [][]byte{pair.Certificate[0], caCert.Raw}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("loading server certificate: %w", err)
		}
	}
	return &pair, nil
}

func readCertFile(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseCert(b)
}

// ClientTLSConfig returns a client configuration that trusts only the CA
// certificates in caPEM and checks the server's host name as usual.
func ClientTLSConfig(caPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("building client tls config: no ca certificate in pem")
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, CipherSuites: AEADCipherSuites(), RootCAs: pool}, nil
}

// PinnedTLSConfig returns a client configuration for a peer whose CA is
// known only by its SHA-256 fingerprint (hex, colons and case ignored), as
// an agent joining with a token has. The handshake succeeds when the last
// certificate the server sends is a CA with that fingerprint, and the
// server's certificate verifies against that CA. The host name is checked
// too when the client sent it (SNI); a client dialling an IP address sends
// none and TLS does not tell VerifyConnection the address, so there the
// signature of the pinned CA, which signs only this server's certificates,
// is what identifies the server.
func PinnedTLSConfig(fingerprint string) (*tls.Config, error) {
	pin := strings.ToLower(strings.ReplaceAll(strings.TrimSpace(fingerprint), ":", ""))
	if b, err := hex.DecodeString(pin); err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("building pinned tls config: fingerprint %q is not a hex sha-256", fingerprint)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		CipherSuites: AEADCipherSuites(),
		// The standard verification needs the CA in RootCAs, which we do
		// not have yet; VerifyConnection does the whole check instead.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPinned(cs, pin)
		},
	}, nil
}

func verifyPinned(cs tls.ConnectionState, pin string) error {
	certs := cs.PeerCertificates
	if len(certs) < 2 {
		return errors.New("verifying server: chain has no ca certificate to match the pinned fingerprint")
	}
	root := certs[len(certs)-1]
	if got := fingerprintDER(root.Raw); got != pin {
		return fmt.Errorf("verifying server: ca fingerprint %s does not match the pinned %s", got, pin)
	}
	if !root.IsCA {
		return errors.New("verifying server: pinned certificate is not a ca")
	}
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range certs[1 : len(certs)-1] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{
		DNSName:       cs.ServerName,
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	if err != nil {
		return fmt.Errorf("verifying server against the pinned ca: %w", err)
	}
	return nil
}
