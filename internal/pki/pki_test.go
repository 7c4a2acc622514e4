package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	c, err := parseCert(mustRead(t, path))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestEnsureCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	caPEM, err := EnsureCA(dir)
	if err != nil {
		t.Fatalf("EnsureCA: %v", err)
	}
	if !bytes.Equal(caPEM, mustRead(t, filepath.Join(dir, CACertFile))) {
		t.Fatal("returned pem differs from ca.crt")
	}
	ca := mustCert(t, filepath.Join(dir, CACertFile))
	if !ca.IsCA || ca.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Fatalf("not a ca: IsCA=%v usage=%v", ca.IsCA, ca.KeyUsage)
	}
	if k, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Fatalf("ca key is %T, want ECDSA P-256", ca.PublicKey)
	}
	if life := ca.NotAfter.Sub(ca.NotBefore); life < 9*365*24*time.Hour || life > 11*365*24*time.Hour {
		t.Fatalf("ca valid for %v, want about 10 years", life)
	}
	for name, want := range map[string]os.FileMode{CAKeyFile: 0o600, CACertFile: 0o644, ".": 0o700} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode %o, want %o", name, got, want)
		}
	}

	again, err := EnsureCA(dir)
	if err != nil {
		t.Fatalf("second EnsureCA: %v", err)
	}
	if !bytes.Equal(again, caPEM) {
		t.Fatal("second EnsureCA made a new ca")
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("dir holds %d entries, want 2 (no temp files)", len(entries))
	}
}

func TestEnsureCARefusesToReplaceABrokenCA(t *testing.T) {
	for name, breakIt := range map[string]func(dir string){
		"key missing":  func(dir string) { os.Remove(filepath.Join(dir, CAKeyFile)) },
		"cert missing": func(dir string) { os.Remove(filepath.Join(dir, CACertFile)) },
		"cert damaged": func(dir string) { os.WriteFile(filepath.Join(dir, CACertFile), []byte("junk"), 0o644) },
		"key of another ca": func(dir string) {
			other := t.TempDir()
			if _, err := EnsureCA(other); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, CAKeyFile), mustRead(t, filepath.Join(other, CAKeyFile)), 0o600)
		},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := EnsureCA(dir); err != nil {
				t.Fatal(err)
			}
			breakIt(dir)
			before, _ := os.ReadFile(filepath.Join(dir, CACertFile))
			if _, err := EnsureCA(dir); err == nil {
				t.Fatal("EnsureCA accepted a broken ca")
			} else {
				t.Logf("error: %v", err)
			}
			after, _ := os.ReadFile(filepath.Join(dir, CACertFile))
			if !bytes.Equal(before, after) {
				t.Fatal("EnsureCA replaced the broken ca")
			}
			if err := EnsureServerCert(dir, []string{"localhost"}); err == nil {
				t.Fatal("EnsureServerCert worked with a broken ca")
			}
		})
	}
}

func TestEnsureServerCert(t *testing.T) {
	dir := t.TempDir()
	hosts := []string{"pv.example.com", "LOCALHOST", "127.0.0.1", "::1", "localhost", " 10.0.0.5 "}
	if err := EnsureServerCert(dir, hosts); err != nil {
		t.Fatalf("EnsureServerCert: %v", err)
	}
	caPEM := mustRead(t, filepath.Join(dir, CACertFile))
	leaf := mustCert(t, filepath.Join(dir, ServerCertFile))
	if got := strings.Join(leaf.DNSNames, ","); got != "pv.example.com,localhost" {
		t.Errorf("DNSNames = %s", got)
	}
	if len(leaf.IPAddresses) != 3 || !leaf.IPAddresses[2].Equal(net.ParseIP("10.0.0.5")) {
		t.Errorf("IPAddresses = %v", leaf.IPAddresses)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < 365*24*time.Hour || life > 2*366*24*time.Hour {
		t.Errorf("server cert valid for %v, want 1-2 years", life)
	}
	if leaf.IsCA {
		t.Error("server cert is a ca")
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "pv.example.com"}); err != nil {
		t.Errorf("leaf does not verify under the ca: %v", err)
	}
	if fi, _ := os.Stat(filepath.Join(dir, ServerKeyFile)); fi.Mode().Perm() != 0o600 {
		t.Errorf("server.key mode %o", fi.Mode().Perm())
	}

	// Same or fewer hosts: kept.
	if err := EnsureServerCert(dir, []string{"localhost", "127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	if mustCert(t, filepath.Join(dir, ServerCertFile)).SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatal("server cert re-issued though every host was covered")
	}

	// A new host: re-issued, same CA.
	if err := EnsureServerCert(dir, []string{"localhost", "192.0.2.7"}); err != nil {
		t.Fatal(err)
	}
	re := mustCert(t, filepath.Join(dir, ServerCertFile))
	if re.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Fatal("server cert not re-issued for a new ip")
	}
	if re.VerifyHostname("192.0.2.7") != nil || re.VerifyHostname("localhost") != nil {
		t.Fatalf("re-issued cert lacks a host: %v %v", re.DNSNames, re.IPAddresses)
	}
	if !bytes.Equal(caPEM, mustRead(t, filepath.Join(dir, CACertFile))) {
		t.Fatal("ca changed")
	}
}

func TestEnsureServerCertReissues(t *testing.T) {
	tests := map[string]func(t *testing.T, dir string){
		"damaged cert": func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, ServerCertFile), []byte("junk"), 0o644)
		},
		"key missing": func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, ServerKeyFile))
		},
		"signed by another ca": func(t *testing.T, dir string) {
			other := t.TempDir()
			if err := EnsureServerCert(other, []string{"localhost"}); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{ServerCertFile, ServerKeyFile} {
				os.WriteFile(filepath.Join(dir, f), mustRead(t, filepath.Join(other, f)), 0o600)
			}
		},
		"expiring soon": func(t *testing.T, dir string) {
			ca, err := loadCA(dir)
			if err != nil {
				t.Fatal(err)
			}
			key, _ := readKey(filepath.Join(dir, ServerKeyFile))
			certPEM, err := issueServerCert(ca, key.Public(), []string{"localhost"}, nil, time.Now(), 10*24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, ServerCertFile), certPEM, 0o644)
		},
	}
	for name, tamper := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			if err := EnsureServerCert(dir, []string{"localhost"}); err != nil {
				t.Fatal(err)
			}
			tamper(t, dir)
			ca, _ := loadCA(dir)
			reason := checkServerCert(dir, ca, []string{"localhost"}, time.Now(), renewBefore)
			if reason == "" {
				t.Fatal("tampered cert judged good")
			}
			t.Logf("reason: %s", reason)
			if err := EnsureServerCert(dir, []string{"localhost"}); err != nil {
				t.Fatal(err)
			}
			if r := checkServerCert(dir, ca, []string{"localhost"}, time.Now(), renewBefore); r != "" {
				t.Fatalf("after EnsureServerCert: %s", r)
			}
		})
	}
}

func TestEnsureServerCertBadHosts(t *testing.T) {
	for _, hosts := range [][]string{nil, {""}, {"host:8443"}, {"https://host"}} {
		if err := EnsureServerCert(t.TempDir(), hosts); err == nil {
			t.Errorf("EnsureServerCert(%q) accepted", hosts)
		}
	}
}

func TestKeyPermissionsRestored(t *testing.T) {
	dir := t.TempDir()
	if err := EnsureServerCert(dir, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, ServerKeyFile)
	os.Chmod(key, 0o644)
	if err := EnsureServerCert(dir, []string{"localhost"}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Fatalf("server.key mode %o, want 600", fi.Mode().Perm())
	}
}

func TestFingerprint(t *testing.T) {
	dir := t.TempDir()
	caPEM, err := EnsureCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca := mustCert(t, filepath.Join(dir, CACertFile))
	sum := sha256.Sum256(ca.Raw)
	want := hex.EncodeToString(sum[:])
	if got := Fingerprint(caPEM); got != want {
		t.Fatalf("Fingerprint = %s, want %s", got, want)
	}
	// A key block before the certificate is skipped.
	withKey := append(mustRead(t, filepath.Join(dir, CAKeyFile)), caPEM...)
	if got := Fingerprint(withKey); got != want {
		t.Fatalf("Fingerprint after a key block = %s, want %s", got, want)
	}
	if Fingerprint(nil) != "" || Fingerprint([]byte("junk")) != "" {
		t.Fatal("Fingerprint of no certificate is not empty")
	}
}
