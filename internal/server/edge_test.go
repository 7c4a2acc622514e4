package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/pki"
)

// shortEdge has timeouts short enough for a test to outlast them.
var shortEdge = EdgeConfig{ReadHeaderTimeout: time.Second, IdleTimeout: time.Second, BodyReadTimeout: time.Second}

// closedWithin tells how long the server took to close c, failing the
// test if it kept it open for limit. Whatever the server sends is read.
func closedWithin(t *testing.T, c net.Conn, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(limit))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept a connection open for %s", limit)
	}
	return time.Since(start)
}

// dialTLS opens a TLS connection to the server as a raw client.
func (e *env) dialTLS(t *testing.T) *tls.Conn {
	t.Helper()
	ca, err := os.ReadFile(e.s.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := pki.ClientTLSConfig(ca)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ServerName = "127.0.0.1"
	raw, err := net.DialTimeout("tcp", e.s.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestSlowClientsAreCutOff holds connections open the ways a slow or
// hostile client does, and checks the server closes each within its
// timeout: a client that never finishes its TLS handshake or its headers,
// a kept-alive connection left idle, and a body that trickles in.
func TestSlowClientsAreCutOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Edge: shortEdge})

	t.Run("headers never finished, 60 clients at once", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 60)
		for i := range 60 {
			c := e.dialTLS(t)
			if i%2 == 0 {
				fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // and nothing more
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err := io.Copy(io.Discard, c)
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					errs <- errors.New("a slow client's connection stayed open 5s")
				}
			}()
		}
		// Meanwhile the API answers others.
		if err := e.super.Health(context.Background()); err != nil {
			t.Errorf("health while slow clients wait: %v", err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	})
	t.Run("tls handshake never started", func(t *testing.T) {
		c, err := net.Dial("tcp", e.s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// 15 s: far above the 1 s timeout, far below never.
		t.Logf("closed after %s", closedWithin(t, c, 15*time.Second).Round(time.Millisecond))
	})
	t.Run("kept-alive connection left idle", func(t *testing.T) {
		c := e.dialTLS(t)
		fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("healthz: %d", resp.StatusCode)
		}
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(5 * time.Second))
		_, err = io.Copy(io.Discard, br)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("an idle kept-alive connection stayed open 5s")
		}
		t.Logf("idle connection closed after %s", time.Since(start).Round(time.Millisecond))
	})
	t.Run("json body trickling", func(t *testing.T) {
		c := e.dialTLS(t)
		fmt.Fprintf(c, "POST /v1/agent/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer to a body that never came: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `"field":"body"`) || !strings.Contains(string(b), "within 1s") {
			t.Errorf("answer to a body that never came: %d %s, want 400 naming the body and the 1s bound", resp.StatusCode, b)
		}
	})
	t.Run("upload stalls", func(t *testing.T) {
		c := e.dialTLS(t)
		fmt.Fprintf(c, "POST /v1/images?project=pa&name=stall&kind=disk HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", e.tokens["superadmin"], 8<<20)
		if _, err := c.Write(make([]byte, 1<<20)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer to a stalled upload: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), "stalled for 1s") {
			t.Errorf("answer to a stalled upload: %d %s", resp.StatusCode, b)
		}
	})
	t.Run("upload slower than the bound but steady", func(t *testing.T) {
		pr, pw := io.Pipe()
		go func() {
			for range 4 {
				if _, err := pw.Write(make([]byte, 256<<10)); err != nil {
					return
				}
				time.Sleep(600 * time.Millisecond) // 2.4s in all, never 1s without data
			}
			pw.Close()
		}()
		op, err := e.super.WithProject("pa").UploadImage(context.Background(), "steady", api.ImageDisk, pr, 1<<20, nil)
		if err != nil {
			t.Fatalf("a steady upload slower than the body bound: %v", err)
		}
		if op, err = e.super.WaitOperation(context.Background(), op.ID, nil); err != nil || op.Status != api.OpSucceeded {
			t.Fatalf("importing the steady upload: %+v %v", op, err)
		}
	})
}

// TestStreamsOutliveTimeouts: an event stream, an agent's watch and a
// console stay open and working well past every timeout of the edge.
func TestStreamsOutliveTimeouts(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Edge: shortEdge})
	ctx := context.Background()
	events, errs, _ := openEvents(t, e.super)
	agentCtx, stopAgent := context.WithCancel(ctx)
	defer stopAgent()
	e.runningOnFakeAgent(agentCtx)
	conn := openConsole(t, e.as(api.RoleOperator, "pa"))

	time.Sleep(3 * time.Second)

	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Write([]byte("pong")); err != nil {
		t.Fatalf("console after the timeouts: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("console echo after the timeouts: %q %v", buf, err)
	}
	// A second console goes through the agent's watch, which must still be open.
	openConsole(t, e.as(api.RoleOperator, "pa"))

	if _, err := e.super.CordonHost(ctx, "h2"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("the event stream ended: %v", <-errs)
			}
			if ev.Type == api.EventHost && ev.Host != nil && ev.Host.Name == "h2" && ev.Host.Spec.Unschedulable {
				return
			}
		case <-deadline:
			t.Fatal("the event stream carried no event after the timeouts")
		}
	}
}

// TestConnectionsPerAddressCapped: one client address holds at most the
// configured number of connections; one more is closed at once, and the
// places come back when connections close.
func TestConnectionsPerAddressCapped(t *testing.T) {
	t.Parallel()
	const limit = 20
	e := newEnv(t, Config{Edge: EdgeConfig{MaxConnsPerAddress: limit}})
	var held []net.Conn
	refused := 0
	for range limit + 10 {
		c, err := net.Dial("tcp", e.s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			held = append(held, c) // the server waits for its TLS handshake
			continue
		}
		refused++
		c.Close()
	}
	t.Logf("%d connections held, %d refused (the test's own clients hold the rest)", len(held), refused)
	if len(held) > limit || refused < 10 {
		t.Errorf("%d connections held and %d refused from one address, want at most %d held", len(held), refused, limit)
	}
	for _, c := range held {
		c.Close()
	}
	// The places are given back.
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := e.super.Health(context.Background())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the API after the slow clients left: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestTLSRefusesCBC dials the running server with a client that offers
// only CBC suites under TLS 1.2, then with an AEAD suite.
func TestTLSRefusesCBC(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ca, err := os.ReadFile(e.s.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	dial := func(suites ...uint16) error {
		cfg, err := pki.ClientTLSConfig(ca)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ServerName, cfg.MaxVersion, cfg.CipherSuites = "127.0.0.1", tls.VersionTLS12, suites
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", e.s.Addr().String(), cfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256); err == nil {
		t.Error("a TLS 1.2 client offering only CBC suites connected to the API")
	}
	if err := dial(tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384); err != nil {
		t.Errorf("a TLS 1.2 client offering AES-GCM: %v", err)
	}
}
