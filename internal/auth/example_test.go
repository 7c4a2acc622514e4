package auth_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/polyvisor/polyvisor/internal/auth"
)

func Example() {
	// Issue a host token; store only its id and hash.
	token, id := auth.NewToken(auth.PrefixHost)
	stored := map[string]string{id: auth.Hash(token)}

	// Later, a request presents the token.
	_, gotID, ok := auth.ParseToken(token)
	fmt.Println(ok && auth.Verify(token, stored[gotID]))

	// The route table pairs each route with a Policy.
	mux := http.NewServeMux()
	policy := auth.OwnHost("name")
	mux.HandleFunc("PUT /v1/agent/hosts/{name}/status", func(w http.ResponseWriter, r *http.Request) {
		fmt.Println(policy.Check(r))
	})
	ctx := auth.WithIdentity(context.Background(), auth.Identity{Kind: auth.KindHost, Name: "h1"})
	for _, path := range []string{"/v1/agent/hosts/h1/status", "/v1/agent/hosts/h2/status"} {
		mux.ServeHTTP(httptest.NewRecorder(), httptest.NewRequestWithContext(ctx, http.MethodPut, path, nil))
	}
	// Output:
	// true
	// <nil>
	// host h1 may only act on its own host
}
