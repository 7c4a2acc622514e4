package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The servers of one control plane share one CA: each issues its own
// server certificate from it, so agents and clients that trust the CA (or
// pin its fingerprint) trust every server. A server that joins receives
// the CA's certificate and key from one already running (ReadCA there,
// InstallCA here).

// ReadCA returns the CA certificate and key of dir, in PEM, after
// checking that they belong together.
func ReadCA(dir string) (certPEM, keyPEM []byte, err error) {
	if _, err := loadCA(dir); err != nil {
		return nil, nil, err
	}
	if certPEM, err = os.ReadFile(filepath.Join(dir, CACertFile)); err != nil {
		return nil, nil, fmt.Errorf("reading the ca certificate: %w", err)
	}
	if keyPEM, err = os.ReadFile(filepath.Join(dir, CAKeyFile)); err != nil {
		return nil, nil, fmt.Errorf("reading the ca key: %w", err)
	}
	return certPEM, keyPEM, nil
}

// InstallCA writes a CA received from another server into dir. A dir that
// already holds that same CA is left as it is; one that holds another CA
// is refused: its server certificates and every agent that trusts it
// would be orphaned.
func InstallCA(dir string, certPEM, keyPEM []byte) error {
	cert, err := parseCert(certPEM)
	if err != nil {
		return fmt.Errorf("installing the ca: certificate: %w", err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return errors.New("installing the ca: no pem key")
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return fmt.Errorf("installing the ca: key: %w", err)
	}
	if !cert.IsCA || !publicKeysEqual(cert.PublicKey, publicOf(key)) {
		return errors.New("installing the ca: the key is not the certificate's, or the certificate is no ca")
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	if exists(certPath) || exists(keyPath) {
		have, err := os.ReadFile(certPath)
		if err == nil && bytes.Equal(bytes.TrimSpace(have), bytes.TrimSpace(certPEM)) {
			return nil
		}
		return fmt.Errorf("installing the ca: %s already holds another ca (fingerprint %s); a joining server needs a data dir of its own", dir, Fingerprint(have))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating pki directory: %w", err)
	}
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("writing the ca key: %w", err)
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("writing the ca certificate: %w", err)
	}
	_, err = loadCA(dir)
	return err
}

// publicOf is the public half of a private key.
func publicOf(key any) crypto.PublicKey {
	if k, ok := key.(crypto.Signer); ok {
		return k.Public()
	}
	return nil
}
