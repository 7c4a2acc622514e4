package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/polyvisor/polyvisor/client"
)

// rawGetter makes GET requests with a client's HTTP transport and reads
// the answer's body without decoding it: the time to the last byte, which
// leaves out the client's JSON decoding that package client adds.
type rawGetter struct {
	c     *client.Client
	base  string // scheme://host of the API
	token string // sent as a bearer token when not empty
}

func (r *apiRun) newRawGetter(ctx context.Context) (*rawGetter, error) {
	c, err := r.newClient(ctx)
	if err != nil {
		return nil, err
	}
	g := &rawGetter{c: c, base: "http://polyvisor"}
	if r.opts.transport == "tls" {
		tok, err := os.ReadFile(filepath.Join(r.srv.dataDir, "admin.token"))
		if err != nil {
			return nil, fmt.Errorf("reading the admin token: %w", err)
		}
		g.base, g.token = r.srv.url(), strings.TrimSpace(string(tok))
	}
	return g, nil
}

// get fetches path and returns the body's length.
func (g *rawGetter) get(ctx context.Context, path string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.base+path, nil)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, err)
	}
	if g.token != "" {
		req.Header.Set("Authorization", "Bearer "+g.token)
	}
	resp, err := g.c.HTTPClient().Do(req)
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return n, fmt.Errorf("GET %s: reading body: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return n, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return n, nil
}

// rawList measures the list page to its last byte, undecoded, with one
// client.
func (r *apiRun) rawList(ctx context.Context, vms int) (ReadPhase, error) {
	g, err := r.newRawGetter(ctx)
	if err != nil {
		return ReadPhase{}, err
	}
	path := fmt.Sprintf("/v1/vms?limit=%d", listPage)
	var size int64
	cpu0 := r.meter.sample()
	ds, wall, err := runConcurrent(ctx, r.opts.listSamples, 1, func(ctx context.Context, _, _ int) error {
		n, err := g.get(ctx, path)
		size = n
		return err
	})
	if err != nil {
		return ReadPhase{}, r.srv.failure(err)
	}
	ph := ReadPhase{Route: "GET " + path + " (raw)", VMs: vms, Throughput: throughput(ds, 1, wall), Bytes: size}
	ph.CPU = r.meter.since(cpu0)
	return ph, nil
}
