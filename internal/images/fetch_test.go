package images

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// allowLoopback lets Fetch reach the tests' servers, which listen on
// loopback.
var allowLoopback = WithPolicy(FetchPolicy{AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})

func fetchServer(t *testing.T, body []byte) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/img", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept-Encoding") != "identity" {
			t.Errorf("Accept-Encoding = %q", r.Header.Get("Accept-Encoding"))
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		for b := body; len(b) > 0; {
			n := min(len(b), 256<<10)
			w.Write(b[:n])
			w.(http.Flusher).Flush()
			b = b[n:]
		}
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		for b := body; len(b) > 0; {
			n := min(len(b), 256<<10)
			w.Write(b[:n])
			w.(http.Flusher).Flush() // no Content-Length: chunked
			b = b[n:]
		}
	})
	mux.HandleFunc("/short", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		// Abort: the connection is closed mid-body.
		panic(http.ErrAbortHandler)
	})
	mux.HandleFunc("/stall", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:1024])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	mux.HandleFunc("/missing", http.NotFound)
	mux.HandleFunc("/broken", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "oops", http.StatusBadGateway)
	})
	mux.HandleFunc("/to-file", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "file:///etc/passwd", http.StatusFound)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Query().Get("to"), http.StatusFound)
	})
	mux.HandleFunc("/to-img", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/img", http.StatusFound)
	})
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/loop", http.StatusFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func testBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 31)
	}
	return b
}

func TestFetch(t *testing.T) {
	body := testBody(3<<20 + 17)
	srv := fetchServer(t, body)
	for _, path := range []string{"/img", "/chunked", "/to-img"} {
		t.Run(path, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "dl", "src")
			var got []int
			n, err := Fetch(context.Background(), srv.URL+path, dst, func(p int) { got = append(got, p) }, allowLoopback)
			if err != nil {
				t.Fatalf("Fetch: %v", err)
			}
			if n != int64(len(body)) {
				t.Fatalf("Fetch = %d bytes, want %d", n, len(body))
			}
			b, _ := os.ReadFile(dst)
			if !bytes.Equal(b, body) {
				t.Fatal("fetched bytes differ")
			}
			if len(got) == 0 || got[len(got)-1] != 100 {
				t.Fatalf("progress %v does not end at 100", got)
			}
			if path != "/chunked" && len(got) < 3 {
				t.Fatalf("progress %v: want intermediate values with a Content-Length", got)
			}
			if entries, _ := os.ReadDir(filepath.Dir(dst)); len(entries) != 1 {
				t.Fatalf("download directory holds %d entries", len(entries))
			}
		})
	}
}

func TestFetchLimit(t *testing.T) {
	body := testBody(1 << 20)
	srv := fetchServer(t, body)
	for _, path := range []string{"/img", "/chunked"} {
		dst := filepath.Join(t.TempDir(), "src")
		_, err := Fetch(context.Background(), srv.URL+path, dst, nil, WithMaxBytes(1000), allowLoopback)
		if !IsReject(err) || !strings.Contains(err.Error(), "over the size limit") {
			t.Fatalf("%s: Fetch over the limit = %v, want a refusal", path, err)
		}
		assertNothingLeft(t, dst)

		dst = filepath.Join(t.TempDir(), "src")
		if n, err := Fetch(context.Background(), srv.URL+path, dst, nil, WithMaxBytes(int64(len(body))), allowLoopback); err != nil || n != int64(len(body)) {
			t.Fatalf("%s: Fetch at exactly the limit = %d, %v", path, n, err)
		}
	}
}

func TestFetchRefuses(t *testing.T) {
	srv := fetchServer(t, testBody(1000))
	tests := []struct {
		url, want string
		reject    bool
		detail    string // what only Detail tells
	}{
		{"ftp://example.com/x.img", `unsupported url scheme "ftp"`, true, ""},
		{"file:///etc/passwd", `unsupported url scheme "file"`, true, ""},
		{"/etc/passwd", "want an absolute http or https url", true, ""},
		{"", "want an absolute http or https url", true, ""},
		{"http://", "no host", true, ""},
		{"http://%zz", "invalid url", true, ""},
		// The test server is on loopback, allowed but not public: its
		// statuses are not shown, only told in the detail.
		{srv.URL + "/missing", "answered an error status", true, "404 Not Found"},
		{srv.URL + "/to-file", `redirected to unsupported scheme "file"`, true, ""},
		{srv.URL + "/loop", "more than 10 redirects", true, ""},
		{srv.URL + "/broken", "answered an error status", false, "502 Bad Gateway"},
		{srv.URL + "/short", "cut short", false, "unexpected EOF"},
		{"http://u:s3cret@%zz", "invalid url", true, ""},
		{"http://127.0.0.1:1/x", "could not connect", false, "connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "src")
			_, err := Fetch(context.Background(), tt.url, dst, nil, allowLoopback)
			if err == nil {
				t.Fatal("Fetch succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
			t.Logf("error: %v; detail: %s", err, Detail(err))
			if tt.detail != "" && (strings.Contains(err.Error(), tt.detail) || !strings.Contains(Detail(err), tt.detail)) {
				t.Fatalf("%q should be in the detail %q only, not in the error %q", tt.detail, Detail(err), err)
			}
			if IsReject(err) != tt.reject {
				t.Fatalf("IsReject(%v) = %v, want %v", err, !tt.reject, tt.reject)
			}
			assertNothingLeft(t, dst)
		})
	}
}

// TestFetchHidesCredentials: neither the error nor its detail (for the
// log) shows the user or password of the URL, nor the values of its
// query (a pre-signed URL's signature, a private token), nor those of a
// URL it was redirected to.
func TestFetchHidesCredentials(t *testing.T) {
	srv := fetchServer(t, nil)
	presigned := "?X-Amz-Credential=AKIAsomeuser&X-Amz-Signature=s3cret&private_token=s3cret;s3cret#s3cret"
	refused := "http://127.0.0.1:1/x" + presigned
	for _, u := range []string{
		strings.Replace(srv.URL, "http://", "http://someuser:s3cret@", 1) + "/missing",
		"http://someuser:s3cret@127.0.0.1:1/x", // connection refused
		"http://someuser:s3cret@169.254.169.254/x",
		srv.URL + "/missing" + presigned,
		srv.URL + "/broken" + presigned,
		refused,
		"http://localhost:1/x" + presigned,
		"http://169.254.169.254/x" + presigned,
		"http://no-such-host.invalid/x" + presigned,
		srv.URL + "/to-img?to=" + strings.TrimPrefix(presigned, "?"),
		// Redirected to a pre-signed URL that fails.
		srv.URL + "/redirect?to=" + url.QueryEscape(refused),
	} {
		_, err := Fetch(context.Background(), u, filepath.Join(t.TempDir(), "x"), nil, allowLoopback)
		if err == nil {
			continue // the redirect to /img succeeds
		}
		for _, s := range []string{err.Error(), Detail(err)} {
			if strings.Contains(s, "s3cret") || strings.Contains(s, "someuser") {
				t.Errorf("%q shows the credentials", s)
			}
		}
	}
}

// TestRedactURL: what may be stored, shown and logged of an image URL.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://example.com/img.qcow2":                                                         "https://example.com/img.qcow2",
		"https://u:p@example.com/img.qcow2":                                                     "https://example.com/img.qcow2",
		"https://example.com/img.qcow2#frag":                                                    "https://example.com/img.qcow2",
		"https://example.com/img.qcow2?":                                                        "https://example.com/img.qcow2",
		"https://example.com/img.qcow2?tok3n":                                                   "https://example.com/img.qcow2?REDACTED",
		"https://example.com/i?a=1&b=&c=x%20y;d=4":                                              "https://example.com/i?a=REDACTED&b=REDACTED&c=REDACTED&d=REDACTED",
		"https://b.s3.amazonaws.com/i.img?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=abc": "https://b.s3.amazonaws.com/i.img?X-Amz-Algorithm=REDACTED&X-Amz-Signature=REDACTED",
	} {
		got, redacted, err := SourceURL(in)
		if err != nil || got != want {
			t.Errorf("SourceURL(%q) = %q, %v; want %q", in, got, err, want)
		}
		if redacted != (got != in) {
			t.Errorf("SourceURL(%q) says redacted=%v", in, redacted)
		}
	}
}

func TestFetchCancelled(t *testing.T) {
	srv := fetchServer(t, testBody(1<<20))
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	dst := filepath.Join(t.TempDir(), "src")
	_, err := Fetch(ctx, srv.URL+"/stall", dst, nil, allowLoopback)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Fetch = %v, want context.Canceled", err)
	}
	assertNothingLeft(t, dst)
}

// TestFetchStall: a server that stops sending fails the download once
// nothing came for the stall timeout, and leaves nothing behind.
func TestFetchStall(t *testing.T) {
	old := fetchStall
	fetchStall = 300 * time.Millisecond
	t.Cleanup(func() { fetchStall = old })
	srv := fetchServer(t, testBody(1<<20))
	dst := filepath.Join(t.TempDir(), "src")
	_, err := Fetch(context.Background(), srv.URL+"/stall", dst, nil, allowLoopback)
	var fe *FetchError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "no data for") {
		t.Fatalf("Fetch of a stalled body = %v, want a stall error", err)
	}
	assertNothingLeft(t, dst)
}

func TestFetchOverPlaceholder(t *testing.T) {
	body := testBody(100)
	srv := fetchServer(t, body)
	dir := t.TempDir()
	f, err := os.CreateTemp(dir, ".fetch-*")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("placeholder")
	f.Close()
	if _, err := Fetch(context.Background(), srv.URL+"/missing", f.Name(), nil, allowLoopback); err == nil {
		t.Fatal("Fetch of a 404 succeeded")
	}
	if b, _ := os.ReadFile(f.Name()); string(b) != "placeholder" {
		t.Fatal("a failed Fetch changed dst")
	}
	if _, err := Fetch(context.Background(), srv.URL+"/img", f.Name(), nil, allowLoopback); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(f.Name()); !bytes.Equal(b, body) {
		t.Fatal("dst does not hold the body")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want 1", len(entries))
	}
}

// ExampleFetch shows the download-then-import path of POST /v1/images.
func ExampleFetch() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte{0}, 4096)) // a tiny raw disk
	}))
	defer srv.Close()
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)

	ctx := context.Background()
	src := filepath.Join(dir, "download")
	if _, err := Fetch(ctx, srv.URL+"/disk.img", src, nil, WithMaxBytes(1<<30),
		// The example serves itself on loopback, which Fetch refuses unless allowed.
		WithPolicy(FetchPolicy{AllowNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})); err != nil {
		fmt.Println(err)
		return
	}
	res, err := Import(ctx, src, filepath.Join(dir, "disk.qcow2"), "disk", nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.SourceFormat, "->", res.Format, res.VirtualSizeBytes)
	// Output: raw -> qcow2 4096
}

// TestFetchAdmit: the caller decides from the announced length, before
// the body is read, how much of it to take: a length over its limit fails
// with its error and nothing written, a body without a length is cut at
// the limit with the same error, and what is received is counted.
func TestFetchAdmit(t *testing.T) {
	body := testBody(3 << 20)
	srv := fetchServer(t, body)
	errFull := errors.New("no room for this image")
	var asked []int64
	admit := func(limit int64, received *atomic.Int64) FetchOption {
		return WithAdmit(func(length int64) (Admission, error) {
			asked = append(asked, length)
			if length > limit {
				return Admission{}, errFull
			}
			return Admission{Limit: limit, Over: errFull, Received: received}, nil
		})
	}
	for _, path := range []string{"/img", "/chunked"} {
		asked = nil
		var received atomic.Int64
		dst := filepath.Join(t.TempDir(), "src")
		_, err := Fetch(context.Background(), srv.URL+path, dst, nil, allowLoopback, admit(1<<20, &received))
		if !errors.Is(err, errFull) {
			t.Fatalf("%s over the admitted 1 MiB: %v, want the admission's error", path, err)
		}
		want := int64(len(body))
		if path == "/chunked" {
			want = -1
		}
		if len(asked) != 1 || asked[0] != want {
			t.Errorf("%s: admission asked with %v, want [%d]", path, asked, want)
		}
		if n := received.Load(); n > 1<<20 || path == "/chunked" && n != 1<<20 {
			t.Errorf("%s: %d bytes received past the admission", path, n)
		}
		assertNothingLeft(t, dst)
		// Within the admission, the whole image.
		received.Store(0)
		n, err := Fetch(context.Background(), srv.URL+path, dst, nil, allowLoopback, admit(4<<20, &received))
		if err != nil || n != int64(len(body)) || received.Load() != n {
			t.Errorf("%s within the admission: %d, %v, %d counted", path, n, err, received.Load())
		}
		os.Remove(dst)
	}
}
