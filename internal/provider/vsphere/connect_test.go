package vsphere

import (
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/provider"
)

func TestConnect(t *testing.T) {
	e := newSim(t, testModel())

	t.Run("trusted CA", func(t *testing.T) {
		p := New(e.config(), testLogger())
		must(t, p.Connect(testCtx(t)))
		defer p.Close()
		if p.Type() != "vsphere" {
			t.Errorf("type %q", p.Type())
		}
		caps := p.Capabilities()
		if !caps.Create || !caps.Suspend || !caps.Snapshots || !caps.Reconfigure || !caps.Console || !caps.Events {
			t.Errorf("capabilities %+v", caps)
		}
		if _, err := p.Inventory(testCtx(t)); err != nil {
			t.Fatalf("inventory after connect: %v", err)
		}
		must(t, p.Close())
		if _, err := p.Inventory(testCtx(t)); err == nil {
			t.Fatal("inventory after close: no error")
		}
	})

	t.Run("insecure", func(t *testing.T) {
		cfg := e.config()
		cfg.CACert, cfg.Insecure = nil, true
		p := New(cfg, testLogger())
		must(t, p.Connect(testCtx(t)))
		must(t, p.Close())
	})

	t.Run("sdk path added", func(t *testing.T) {
		cfg := e.config()
		cfg.URL = strings.TrimSuffix(e.url, "/sdk")
		p := New(cfg, testLogger())
		must(t, p.Connect(testCtx(t)))
		must(t, p.Close())
	})

	t.Run("wrong password", func(t *testing.T) {
		cfg := e.config()
		cfg.Password = "not-the-password"
		err := New(cfg, testLogger()).Connect(testCtx(t))
		if !errors.Is(err, provider.ErrAuth) {
			t.Fatalf("err = %v, want ErrAuth", err)
		}
		if strings.Contains(err.Error(), cfg.Password) {
			t.Errorf("error shows the password: %v", err)
		}
		if !strings.Contains(err.Error(), e.url) {
			t.Errorf("error does not name the url: %v", err)
		}
		t.Log(err)
	})

	t.Run("unreachable", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		addr := l.Addr().String()
		l.Close() // nothing listens there now
		cfg := e.config()
		cfg.URL = "https://" + addr + "/sdk"
		err = New(cfg, testLogger()).Connect(testCtx(t))
		if !errors.Is(err, provider.ErrUnreachable) {
			t.Fatalf("err = %v, want ErrUnreachable", err)
		}
		if !strings.Contains(err.Error(), addr) {
			t.Errorf("error does not name the url: %v", err)
		}
		t.Log(err)
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		cfg := e.config()
		cfg.CACert = nil
		err := New(cfg, testLogger()).Connect(testCtx(t))
		if !errors.Is(err, provider.ErrCertificate) {
			t.Fatalf("err = %v, want ErrCertificate", err)
		}
		t.Log(err)
	})

	t.Run("certificate for another host", func(t *testing.T) {
		// vcsim's certificate names 127.0.0.1, not localhost.
		u, err := url.Parse(e.url)
		must(t, err)
		u.Host = "localhost:" + u.Port()
		cfg := e.config()
		cfg.URL = u.String()
		err = New(cfg, testLogger()).Connect(testCtx(t))
		if !errors.Is(err, provider.ErrCertificate) {
			t.Fatalf("err = %v, want ErrCertificate", err)
		}
		t.Log(err)
	})

	t.Run("bad url", func(t *testing.T) {
		cfg := e.config()
		cfg.URL = "ftp://vc.example/sdk"
		if err := New(cfg, testLogger()).Connect(testCtx(t)); err == nil {
			t.Fatal("no error")
		}
	})
}
