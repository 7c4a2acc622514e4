package pki_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"

	"github.com/polyvisor/polyvisor/internal/pki"
)

func Example() {
	dir, _ := os.MkdirTemp("", "pki")
	defer os.RemoveAll(dir)

	// Server side, at start.
	caPEM, err := pki.EnsureCA(dir)
	if err != nil {
		panic(err)
	}
	if err := pki.EnsureServerCert(dir, []string{"localhost", "127.0.0.1"}); err != nil {
		panic(err)
	}
	serverTLS, err := pki.ServerTLSConfig(dir)
	if err != nil {
		panic(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello")
	}))
	srv.TLS = serverTLS
	srv.StartTLS()
	defer srv.Close()

	// Agent side: it knows only the fingerprint from its join token.
	clientTLS, err := pki.PinnedTLSConfig(pki.Fingerprint(caPEM))
	if err != nil {
		panic(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
	resp, err := c.Get(srv.URL)
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status)
	// Output: 200 OK
}
