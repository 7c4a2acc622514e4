package client

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestIsUnavailable: a request that got no answer (nothing listens, or
// the server broke the connection) or a 503 is the control plane being
// unavailable; any other answer is about the request.
func TestIsUnavailable(t *testing.T) {
	ctx := context.Background()
	status := func(code int) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(code)
		}))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	t.Cleanup(broken.Close)
	for _, tc := range []struct {
		what, url string
		want      bool
	}{
		{"nothing listens", deadURL(t), true},
		{"the connection broke", broken.URL, true},
		{"503", status(http.StatusServiceUnavailable), true},
		{"404", status(http.StatusNotFound), false},
		{"409", status(http.StatusConflict), false},
		{"500", status(http.StatusInternalServerError), false},
	} {
		c, err := New(Config{URL: tc.url, DialTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.GetVM(ctx, "v")
		if err == nil || IsUnavailable(err) != tc.want {
			t.Errorf("%s: %v: IsUnavailable is %v, want %v", tc.what, err, IsUnavailable(err), tc.want)
		}
	}
	if IsUnavailable(nil) {
		t.Error("IsUnavailable(nil)")
	}
}
