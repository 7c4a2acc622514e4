package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// patternReader produces n bytes of 0x01 (a disk qemu-img stores in
// full, unlike zeros) without holding them, and counts what was read.
type patternReader struct {
	left int64
	read atomic.Int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.left))
	for i := range n {
		b[i] = 1
	}
	p.left -= int64(n)
	p.read.Add(int64(n))
	return n, nil
}

// sourceLeft bounds what may be received of a refused source: the room
// it is cut at, and what sockets buffer on the way.
const sourceLeft = 64 << 20

// noTempFiles fails the test if the image store holds an upload or a
// download being received.
func (e *env) noTempFiles(t *testing.T) {
	t.Helper()
	for _, f := range e.imageFiles() {
		if strings.HasPrefix(f, ".") {
			t.Errorf("the image store holds %s after a refused import", f)
		}
	}
}

// TestImageSourceOverQuota: an upload or a download over what the
// project's image storage quota has free is refused from its
// Content-Length before any of it is received, and cut where the quota
// has no more room when it has none, leaving nothing behind. The
// reproduction: a 1 MiB-quota project uploading hundreds of MiB had all
// of it written to the server's disk before the refusal.
func TestImageSourceOverQuota(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	limit := int64(4)
	if _, err := e.super.SetQuota(ctx, "pa", api.Quota{ImageStorageMiB: &limit}); err != nil {
		t.Fatal(err)
	}
	member := e.as(api.RoleMember, "pa")
	const size = 300 << 20
	for _, known := range []bool{true, false} {
		t.Run(fmt.Sprintf("upload, length known %v", known), func(t *testing.T) {
			src := &patternReader{left: size}
			length := int64(size)
			if !known {
				length = -1
			}
			_, err := member.UploadImage(ctx, "big", api.ImageDisk, src, length, nil)
			if known {
				var se *client.StatusError
				if !errors.As(err, &se) || se.Status != http.StatusUnprocessableEntity || se.Err.Details["quota"] != "imageStorageMiB" ||
					!strings.Contains(se.Error(), "300 MiB") {
					t.Fatalf("upload of 300 MiB into a 4 MiB quota: %v, want 422 over imageStorageMiB naming the size", err)
				}
			} else if err == nil {
				t.Fatal("upload of 300 MiB without a length into a 4 MiB quota succeeded")
			} else if status := refusedWith(t, e, "big"); status != http.StatusUnprocessableEntity {
				// The client may see its connection cut before it reads
				// the answer; the server answered, and recorded, 422.
				t.Fatalf("upload without a length: %v, recorded as %d; want 422", err, status)
			}
			if n := src.read.Load(); n > sourceLeft || known && n > 0 {
				t.Errorf("%d bytes of the upload were read before the refusal", n)
			}
			e.noTempFiles(t)
		})
	}
	// From a URL: refused from the Content-Length, or cut.
	if _, err := e.super.SetImageSettings(ctx, api.ImageSettings{FetchAllowNetworks: []string{"127.0.0.1/32"}}); err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	web := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/known" {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		buf := make([]byte, 1<<20)
		for i := range buf {
			buf[i] = 1
		}
		for range size >> 20 {
			n, err := w.Write(buf)
			served.Add(int64(n))
			if err != nil {
				return
			}
		}
	}))
	defer web.Close()
	for _, path := range []string{"/known", "/chunked"} {
		served.Store(0)
		done := waitDone(t, member)(member.ImportImageURL(ctx, api.ImageCreate{Name: "big-url", URL: web.URL + path}))
		if done.Status != api.OpFailed || done.Error == nil || done.Error.Code != api.CodeUnprocessable || done.Error.Details["quota"] != "imageStorageMiB" {
			t.Errorf("URL import of 300 MiB (%s) into a 4 MiB quota: %s %+v", path, done.Status, done.Error)
		}
		if n := served.Load(); n > sourceLeft {
			t.Errorf("%s: %d MiB were downloaded before the refusal", path, n>>20)
		}
		e.noTempFiles(t)
	}
	// What fits is imported as before.
	if _, err := member.UploadImage(ctx, "small", api.ImageDisk, &patternReader{left: 2 << 20}, 2<<20, nil); err != nil {
		t.Fatalf("upload of 2 MiB into the quota's room: %v", err)
	}
}

// refusedWith is the status the audit log recorded for the last
// request about image name in project pa.
func refusedWith(t *testing.T, e *env, name string) int {
	t.Helper()
	recs, err := e.super.ListAudit(context.Background(), api.AuditQuery{Project: "pa", Resource: "image/" + name})
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) == 0 {
		t.Fatalf("no audit record of image %s", name)
	}
	last := recs[0]
	for _, r := range recs {
		if r.Time.After(last.Time) {
			last = r
		}
	}
	return last.Status
}

// TestImageSourceOverDisk: an upload or a download is refused from its
// length, or cut, where the image store's disk would go under the
// server's reserve; the partial file is removed. The image store is a
// small tmpfs.
func TestImageSourceOverDisk(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("mounting a small file system for the image store needs root")
	}
	e := newEnv(t, Config{})
	ctx := context.Background()
	dir := filepath.Join(e.dataDir, "images")
	// 96 MiB, of which the image store keeps its margin (64 MiB) free.
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=96m,mode=0700"); err != nil {
		t.Skipf("mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	member := e.as(api.RoleMember, "pa")
	const size = 200 << 20
	for _, length := range []int64{size, -1} {
		src := &patternReader{left: size}
		_, err := member.UploadImage(ctx, "big", api.ImageDisk, src, length, nil)
		var se *client.StatusError
		switch {
		case err == nil:
			t.Fatalf("upload of 200 MiB (length %d) into 32 MiB of room succeeded", length)
		case length >= 0 && (!errors.As(err, &se) || se.Status != http.StatusServiceUnavailable || !strings.Contains(se.Error(), "no room")):
			t.Fatalf("upload of 200 MiB into 32 MiB of room: %v, want 503", err)
		case length < 0 && refusedWith(t, e, "big") != http.StatusServiceUnavailable:
			t.Fatalf("upload of 200 MiB without a length into 32 MiB of room: %v, recorded as %d; want 503", err, refusedWith(t, e, "big"))
		}
		if n := src.read.Load(); n > sourceLeft || length >= 0 && n > 0 {
			t.Errorf("length %d: %d bytes of the upload were read before the refusal", length, n)
		}
		e.noTempFiles(t)
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if used := (st.Blocks - st.Bfree) * uint64(st.Bsize); used > 1<<20 {
		t.Errorf("the image store's disk holds %d bytes after the refusals", used)
	}
	// What fits is imported.
	if _, err := member.UploadImage(ctx, "small", api.ImageDisk, &patternReader{left: 4 << 20}, 4<<20, nil); err != nil {
		t.Fatalf("upload of 4 MiB into 32 MiB of room: %v", err)
	}
}
