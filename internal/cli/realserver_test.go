package cli

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/internal/server"
)

// realServer is a Polyvisor server running in the test: embedded etcd, the
// TLS API and the unix socket, with no agent.
type realServer struct {
	srv     *server.Server
	dataDir string
	socket  string // the unix socket, which serves local root
	url     string // https://127.0.0.1:PORT
	port    int
	caFile  string
}

// startRealServer starts a server listening on listen ("127.0.0.1:0"
// when empty) and its socket.
func startRealServer(t *testing.T, cfg server.Config) *realServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	cfg.DataDir = dir
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	cfg.Socket = filepath.Join(dir, "pv.sock")
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := server.New(ctx, cfg)
	if err != nil {
		t.Fatalf("starting a server: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("starting a server: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	port := s.Addr().(*net.TCPAddr).Port
	return &realServer{
		srv: s, dataDir: dir, socket: cfg.Socket, port: port, caFile: s.CAFile(),
		url: "https://127.0.0.1:" + strconv.Itoa(port),
	}
}

// asRoot returns the arguments that reach the server as local root.
func (r *realServer) asRoot(args ...string) []string {
	return append([]string{"--server", "unix://" + r.socket}, args...)
}

// tcpProxy forwards connections from a listener on listen to target, so
// that a client reaches a server by another address than its own.
func tcpProxy(t *testing.T, listen, target string) string {
	t.Helper()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				s, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer s.Close()
				go func() { _, _ = io.Copy(s, c) }()
				_, _ = io.Copy(c, s)
			}()
		}
	}()
	return l.Addr().String()
}
