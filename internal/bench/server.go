package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// startTimeout bounds how long a server or agent may take to be ready.
const startTimeout = 60 * time.Second

// serverProc is a `polyvisor server` child process on a temporary data dir.
type serverProc struct {
	*proc
	dataDir string
	port    int
	local   *client.Client // over the unix socket, as local root
}

// socket is the server's unix socket.
func (s *serverProc) socket() string { return filepath.Join(s.dataDir, "polyvisor.sock") }

// url is the server's TLS API.
func (s *serverProc) url() string { return "https://127.0.0.1:" + strconv.Itoa(s.port) }

// startServer runs `bin server` on dataDir, listening on a free loopback
// port, with the extra args, and waits until its API answers. The server
// is stopped, and the QEMUs its built-in agent left under dataDir killed,
// by cl.
func startServer(ctx context.Context, cl *cleanups, bin, dataDir string, extra ...string) (*serverProc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating server data dir: %w", err)
	}
	// The benchmarks measure what the API can take, so the per-user and
	// per-address rate limits, which would cap one client long before, are
	// off.
	args := append([]string{"server", "--data-dir", dataDir, "--listen", "127.0.0.1:" + strconv.Itoa(port), "--rate-limit", "0",
		"--address-rate-limit", "0"}, extra...)
	p, err := startProc("polyvisor server", filepath.Join(filepath.Dir(dataDir), "server.log"), bin, args...)
	if err != nil {
		return nil, err
	}
	cl.add(func() {
		p.stop(15 * time.Second)
		killQEMUsUnder(dataDir)
	})
	s := &serverProc{proc: p, dataDir: dataDir, port: port}
	s.local, err = client.New(client.Config{URL: "unix://" + s.socket(), UserAgent: "polyvisor-bench"})
	if err != nil {
		return nil, err
	}
	err = poll(ctx, startTimeout, 50*time.Millisecond, "the server to answer", func() error {
		if done, werr := p.exited(); done {
			return &fatal{fmt.Errorf("server exited: %v", werr)}
		}
		return s.local.Health(ctx)
	})
	if err != nil {
		return nil, p.failure(err)
	}
	return s, nil
}

// fatal marks an error that makes no retry worth it.
type fatal struct{ err error }

func (f *fatal) Error() string { return f.err.Error() }
func (f *fatal) Unwrap() error { return f.err }

// adminClient returns a client of the TLS API with the admin token, as a
// remote user would have.
func (s *serverProc) adminClient() (*client.Client, error) {
	tok, err := os.ReadFile(filepath.Join(s.dataDir, "admin.token"))
	if err != nil {
		return nil, fmt.Errorf("reading the admin token: %w", err)
	}
	return client.New(client.Config{
		URL:       s.url(),
		Token:     strings.TrimSpace(string(tok)),
		CAFile:    filepath.Join(s.dataDir, "pki", "ca.crt"),
		UserAgent: "polyvisor-bench",
	})
}

// waitHostReady waits until host reports ready, failing early should one
// of procs exit.
func waitHostReady(ctx context.Context, c *client.Client, host string, procs ...*proc) error {
	return poll(ctx, startTimeout, 50*time.Millisecond, "host "+host+" to be ready", func() error {
		for _, p := range procs {
			if done, werr := p.exited(); done {
				return &fatal{p.failure(fmt.Errorf("%s exited: %v", p.name, werr))}
			}
		}
		h, err := c.GetHost(ctx, host)
		if err != nil {
			return err
		}
		if h.Status.State != api.HostReady {
			return fmt.Errorf("host is %s", h.Status.State)
		}
		return nil
	})
}

// Image names the benchmarks import the tiny guest as.
const (
	imageKernel = "bench-kernel"
	imageInitrd = "bench-initrd"
	imageDisk   = "bench-disk"
)

// importGuest uploads the guest's files as images and waits for the imports.
// withDisk leaves the disk out when false.
func importGuest(ctx context.Context, c *client.Client, guestDir string, withDisk bool) error {
	imgs := []struct{ name, kind, file string }{
		{imageKernel, api.ImageKernel, guestKernel},
		{imageInitrd, api.ImageInitrd, guestInitrd},
	}
	if withDisk {
		imgs = append(imgs, struct{ name, kind, file string }{imageDisk, api.ImageDisk, guestDisk})
	}
	for _, im := range imgs {
		if err := uploadImage(ctx, c, im.name, im.kind, filepath.Join(guestDir, im.file)); err != nil {
			return err
		}
	}
	return nil
}

func uploadImage(ctx context.Context, c *client.Client, name, kind, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("importing image %s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("importing image %s: %w", name, err)
	}
	op, err := c.UploadImage(ctx, name, kind, f, fi.Size(), nil)
	if err != nil {
		return fmt.Errorf("importing image %s: %w", name, err)
	}
	return waitSucceeded(ctx, c, op, 5*time.Minute)
}

// waitSucceeded follows an operation to its end and fails unless it
// succeeded.
func waitSucceeded(ctx context.Context, c *client.Client, op *api.Operation, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done, err := c.WaitOperation(ctx, op.ID, nil)
	if err != nil {
		return err
	}
	if done.Status != api.OpSucceeded {
		msg := done.Message
		if done.Error != nil {
			msg = done.Error.Message
		}
		return fmt.Errorf("%s of %s %s %s: %s", done.Kind, done.Target.Kind, done.Target.Name, done.Status, msg)
	}
	return nil
}

// scrapeMetrics returns the text of the server's /metrics.
func scrapeMetrics(ctx context.Context, c *client.Client, base string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return "", fmt.Errorf("scraping metrics: %w", err)
	}
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		return "", fmt.Errorf("scraping metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("scraping metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("scraping metrics: %s", resp.Status)
	}
	return string(b), nil
}

// metricValue finds the sample of series (a metric name with its labels
// exactly as exposed, e.g. `polyvisor_vms{state="stopped"}`) in a
// Prometheus text exposition.
func metricValue(text, series string) (float64, bool) {
	for line := range strings.SplitSeq(text, "\n") {
		rest, ok := strings.CutPrefix(line, series)
		if !ok || !strings.HasPrefix(rest, " ") {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			return 0, false
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, false
		}
		return v, true
	}
	return 0, false
}
