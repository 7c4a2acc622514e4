package store

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// etcdBinary is Debian's etcd-server (etcd 3.4).
const etcdBinary = "/usr/bin/etcd"

// TestExternal runs the suite against a separate etcd process, as a fleet
// uses it: the store dials Endpoints and embeds nothing.
func TestExternal(t *testing.T) {
	t.Parallel()
	base := startExternalEtcd(t, false)
	runSuite(t, externalConfigs(base))
}

// TestExternalTLS runs part of the suite against an etcd that requires TLS
// client certificates.
func TestExternalTLS(t *testing.T) {
	t.Parallel()
	base := startExternalEtcd(t, true)
	mk := externalConfigs(base)
	t.Run("CRUD", func(t *testing.T) { testCRUD(t, mk) })
	t.Run("OutOfBandWrites", func(t *testing.T) { testOutOfBand(t, mk) })
	t.Run("RawKeys", func(t *testing.T) { testRawKeys(t, mk) })
}

// externalConfigs gives each test its own prefix on the shared etcd.
func externalConfigs(base Config) configFunc {
	var n atomic.Int64
	return func(t *testing.T) Config {
		cfg := base
		cfg.Prefix = fmt.Sprintf("/test/%d/", n.Add(1))
		cfg.Logger = testLogger(t)
		return cfg
	}
}

// startExternalEtcd runs etcd on loopback ports the kernel picked, in a
// temporary directory, until the test ends. It returns the Config that
// reaches it.
func startExternalEtcd(t *testing.T, withTLS bool) Config {
	t.Helper()
	if _, err := os.Stat(etcdBinary); err != nil {
		peer.Missing(t, "external etcd tests need %s (apt-get install etcd-server; scripts/test.sh installs it): %v", etcdBinary, err)
	}
	dir := t.TempDir()
	var cfg Config
	scheme := "http"
	var tlsArgs []string
	if withTLS {
		scheme = "https"
		cfg.CAFile, cfg.CertFile, cfg.KeyFile = writeTestCerts(t, dir)
		tlsArgs = []string{
			"--trusted-ca-file", cfg.CAFile, "--client-cert-auth",
			"--cert-file", filepath.Join(dir, "server.pem"), "--key-file", filepath.Join(dir, "server-key.pem"),
		}
	}
	// The ports are free when picked; another process could take one before
	// etcd binds it, so a failed start is retried with new ports.
	for attempt := 1; ; attempt++ {
		client, peer := freePort(t), freePort(t)
		clientURL := fmt.Sprintf("%s://127.0.0.1:%d", scheme, client)
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", peer)
		logPath := filepath.Join(dir, fmt.Sprintf("etcd-%d.log", attempt))
		args := append([]string{
			"--name", "test",
			"--data-dir", filepath.Join(dir, fmt.Sprintf("data-%d", attempt)),
			"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "test=" + peerURL,
			"--heartbeat-interval", "20", "--election-timeout", "200",
			"--logger", "zap", "--log-outputs", logPath, "--log-level", "warn",
		}, tlsArgs...)
		cmd := exec.Command(etcdBinary, args...)
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", etcdBinary, err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		cfg.Endpoints = []string{clientURL}
		err := waitEtcd(cfg, exited)
		if err == nil {
			t.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			return cfg
		}
		cmd.Process.Kill()
		<-exited
		if attempt == 3 {
			logs, _ := os.ReadFile(logPath)
			t.Fatalf("external etcd did not start: %v\n%s", err, logs)
		}
	}
}

// waitEtcd waits until etcd answers a read, or exits.
func waitEtcd(cfg Config, exited <-chan error) error {
	// Wait for the port first: a client dialing too early backs off for a
	// second before it tries again.
	addr := strings.TrimPrefix(strings.TrimPrefix(cfg.Endpoints[0], "http://"), "https://")
	deadline := time.Now().Add(20 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			conn.Close()
			break
		}
		select {
		case exitErr := <-exited:
			return fmt.Errorf("etcd exited: %v", exitErr)
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
	ccfg := clientv3.Config{Endpoints: cfg.Endpoints, DialTimeout: time.Second, Logger: zap.NewNop()}
	if cfg.CAFile != "" {
		info := transport.TLSInfo{TrustedCAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}
		tlsCfg, err := info.ClientConfig()
		if err != nil {
			return err
		}
		ccfg.TLS = tlsCfg
	}
	cli, err := clientv3.New(ccfg)
	if err != nil {
		return err
	}
	defer cli.Close()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := cli.Get(ctx, "health")
		cancel()
		if err == nil {
			return nil
		}
		select {
		case exitErr := <-exited:
			return fmt.Errorf("etcd exited: %v", exitErr)
		default:
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("pick a port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writeTestCerts writes a CA, a server certificate for 127.0.0.1 and a
// client certificate, and returns the CA, client cert and client key paths.
func writeTestCerts(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, caCert := newCert(t, nil, nil, &x509.Certificate{
		Subject:               pkix.Name{CommonName: "polyvisor test CA"},
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	})
	writePEM(t, filepath.Join(dir, "ca.pem"), "CERTIFICATE", caCert.Raw)
	for _, c := range []struct {
		name string
		tmpl *x509.Certificate
	}{
		{"server", &x509.Certificate{
			Subject:     pkix.Name{CommonName: "etcd"},
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			KeyUsage:    x509.KeyUsageDigitalSignature,
		}},
		{"client", &x509.Certificate{
			Subject:     pkix.Name{CommonName: "polyvisor"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			KeyUsage:    x509.KeyUsageDigitalSignature,
		}},
	} {
		k, crt := newCert(t, caKey, caCert, c.tmpl)
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		writePEM(t, filepath.Join(dir, c.name+".pem"), "CERTIFICATE", crt.Raw)
		writePEM(t, filepath.Join(dir, c.name+"-key.pem"), "EC PRIVATE KEY", der)
	}
	return filepath.Join(dir, "ca.pem"), filepath.Join(dir, "client.pem"), filepath.Join(dir, "client-key.pem")
}

// newCert makes a key and a certificate from tmpl, signed by parent (self
// signed when parent is nil).
func newCert(t *testing.T, parentKey *ecdsa.PrivateKey, parent, tmpl *x509.Certificate) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}
