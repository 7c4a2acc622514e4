package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/pki"
)

// servedLeaf is the certificate a fresh connection to the server sees.
func servedLeaf(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // reads the certificate only
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestCertificateRenewedWhileRunning gives the server certificates that
// live four seconds: the running server renews them, and past the first
// one's expiry a new client trusting the CA file, an agent pinning the CA
// fingerprint, and an agent's watch opened under the first certificate
// all keep working.
func TestCertificateRenewedWhileRunning(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Edge: EdgeConfig{Cert: pki.CertOptions{Validity: 4 * time.Second, RenewBefore: 3 * time.Second}}})
	ctx := context.Background()
	addr := e.s.Addr().String()
	first := servedLeaf(t, addr)

	// An agent as the real one connects: the CA pinned by fingerprint.
	ca, err := os.ReadFile(e.s.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := pki.PinnedTLSConfig(pki.Fingerprint(ca))
	if err != nil {
		t.Fatal(err)
	}
	agent, err := client.New(client.Config{URL: e.url, Token: e.tokens["h1"], TLSConfig: pinned})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs, errs := agent.WatchHost(wctx, "h1")
	for m := range msgs {
		if m.Type == api.AgentMsgSynced {
			break
		}
	}

	time.Sleep(time.Until(first.NotAfter) + 500*time.Millisecond)

	now := servedLeaf(t, addr)
	if now.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("the server still serves its first certificate, which expired at %s", first.NotAfter)
	}
	if !now.NotAfter.After(time.Now()) {
		t.Fatalf("the server serves a certificate that expired at %s", now.NotAfter)
	}
	fresh := e.client(e.tokens["superadmin"], "")
	if _, err := fresh.WhoAmI(ctx); err != nil {
		t.Errorf("a new client trusting the CA file: %v", err)
	}
	agent.CloseIdleConnections()
	if _, err := agent.PutHostStatus(ctx, "h1", api.HostStatus{CPUs: 64, MemoryMiB: 256 << 10, Accel: "tcg"}); err != nil {
		t.Errorf("an agent pinning the CA, on a new connection: %v", err)
	}
	// The watch opened under the first certificate still carries changes.
	vm, err := e.super.WithProject("pa").GetVM(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agent.PutVMStatus(ctx, vm.Key(), api.VMStatus{PowerState: api.PowerRunning, ObservedGeneration: vm.Generation}); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				t.Fatalf("the agent's watch ended: %v", <-errs)
			}
			if m.Type == api.AgentMsgVM && m.VM != nil && m.VM.Name == "vm1" && m.VM.Status.PowerState == api.PowerRunning {
				return
			}
		case <-timeout:
			t.Fatal("the agent's watch carried no change after the renewal")
		}
	}
}
