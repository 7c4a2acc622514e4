package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for _, prefix := range []string{PrefixAdmin, PrefixHost, PrefixJoin, "x9_"} {
		for range 50 {
			tok, id := NewToken(prefix)
			if !strings.HasPrefix(tok, prefix+id+"_") {
				t.Fatalf("token %q does not start with %q", tok, prefix+id+"_")
			}
			secret := strings.TrimPrefix(tok, prefix+id+"_")
			if len(secret) != 64 { // 32 bytes, 256 bits
				t.Fatalf("secret %q has %d hex chars, want 64", secret, len(secret))
			}
			if len(id) != 12 {
				t.Fatalf("id %q has %d chars, want 12", id, len(id))
			}
			if url.QueryEscape(tok) != tok || url.PathEscape(tok) != tok {
				t.Fatalf("token %q is not url-safe", tok)
			}
			if seen[tok] || seen[id] {
				t.Fatalf("token or id repeated: %q", tok)
			}
			seen[tok], seen[id] = true, true

			p, gotID, ok := ParseToken(tok)
			if !ok || p != prefix || gotID != id {
				t.Fatalf("ParseToken(%q) = %q, %q, %v; want %q, %q, true", tok, p, gotID, ok, prefix, id)
			}
		}
	}
}

func TestNewTokenBadPrefixPanics(t *testing.T) {
	for _, p := range []string{"", "_", "pva", "PVA_", "pv-a_", "1a_", "pva_x"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewToken(%q) did not panic", p)
				}
			}()
			NewToken(p)
		}()
	}
}

func TestParseTokenRejects(t *testing.T) {
	good, _ := NewToken(PrefixHost)
	for _, tok := range []string{
		"",
		"pvh_",
		"nounderscore",
		good[:len(good)-1],
		good + "0",
		strings.ToUpper(good),
		strings.Replace(good, "_", "-", 2),
		"pvh_" + strings.Repeat("g", 12) + "_" + strings.Repeat("0", 64),
		"pvh_" + strings.Repeat("0", 12) + "x" + strings.Repeat("0", 64),
	} {
		if _, _, ok := ParseToken(tok); ok {
			t.Errorf("ParseToken(%q) accepted", tok)
		}
	}
}

func TestHashVerify(t *testing.T) {
	tok, _ := NewToken(PrefixAdmin)
	h := Hash(tok)
	if len(h) != 64 || strings.ToLower(h) != h {
		t.Fatalf("Hash = %q, want 64 lowercase hex chars", h)
	}
	// Known vector: sha256("abc").
	if got := Hash("abc"); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Fatalf(`Hash("abc") = %s`, got)
	}
	if !Verify(tok, h) {
		t.Fatal("Verify rejected the right token")
	}
	other, _ := NewToken(PrefixAdmin)
	for _, bad := range []struct{ tok, hash string }{{other, h}, {tok, Hash(other)}, {tok, ""}, {tok, h[:63]}, {"", h}} {
		if Verify(bad.tok, bad.hash) {
			t.Errorf("Verify(%q, %q) accepted", bad.tok, bad.hash)
		}
	}
}

func TestContext(t *testing.T) {
	ctx := context.Background()
	if got := FromContext(ctx); got != Anonymous {
		t.Fatalf("FromContext(empty) = %+v, want Anonymous", got)
	}
	if got := FromContext(WithIdentity(ctx, Identity{})); got != Anonymous {
		t.Fatalf("FromContext(zero identity) = %+v, want Anonymous", got)
	}
	want := Identity{Kind: KindHost, Name: "h1"}
	if got := FromContext(WithIdentity(ctx, want)); got != want {
		t.Fatalf("FromContext = %+v, want %+v", got, want)
	}
}

func TestPolicies(t *testing.T) {
	admin := Identity{Kind: KindAdmin, Name: "root"}
	h1 := Identity{Kind: KindHost, Name: "h1"}
	h2 := Identity{Kind: KindHost, Name: "h2"}
	nameless := Identity{Kind: KindHost}
	stranger := Identity{Kind: "robot", Name: "r"}
	anon := Anonymous
	zero := Identity{}

	const (
		ok     = ""
		unauth = api.CodeUnauthorized
		forb   = api.CodeForbidden
	)
	tests := []struct {
		policy string
		p      Policy
		id     Identity
		want   string
	}{
		{"public", Public, anon, ok},
		{"public", Public, zero, ok},
		{"public", Public, h1, ok},
		{"admin", Admin, admin, ok},
		{"admin", Admin, h1, forb},
		{"admin", Admin, stranger, forb},
		{"admin", Admin, anon, unauth},
		{"admin", Admin, zero, unauth},
		{"anyhost", AnyHost, admin, ok},
		{"anyhost", AnyHost, h1, ok},
		{"anyhost", AnyHost, h2, ok},
		{"anyhost", AnyHost, nameless, forb},
		{"anyhost", AnyHost, stranger, forb},
		{"anyhost", AnyHost, anon, unauth},
		{"ownhost", OwnHost("name"), admin, ok},
		{"ownhost", OwnHost("name"), h1, ok},
		{"ownhost", OwnHost("name"), h2, forb},
		{"ownhost", OwnHost("name"), nameless, forb},
		{"ownhost", OwnHost("name"), stranger, forb},
		{"ownhost", OwnHost("name"), anon, unauth},
		{"ownhost-otherparam", OwnHost("missing"), h1, forb},
	}
	for _, tt := range tests {
		t.Run(tt.policy+"/"+tt.id.String(), func(t *testing.T) {
			// Route through a real ServeMux so PathValue is filled as in
			// the server.
			var got error
			mux := http.NewServeMux()
			mux.HandleFunc("PUT /v1/agent/hosts/{name}/status", func(_ http.ResponseWriter, r *http.Request) {
				got = tt.p.Check(r)
			})
			req := httptest.NewRequestWithContext(WithIdentity(context.Background(), tt.id),
				http.MethodPut, "/v1/agent/hosts/h1/status", nil)
			mux.ServeHTTP(httptest.NewRecorder(), req)

			if tt.want == ok {
				if got != nil {
					t.Fatalf("denied: %v", got)
				}
				return
			}
			var apiErr *api.Error
			if !errors.As(got, &apiErr) {
				t.Fatalf("got %v (%T), want *api.Error %s", got, got, tt.want)
			}
			if apiErr.Code != tt.want {
				t.Fatalf("code %q (%v), want %q", apiErr.Code, apiErr, tt.want)
			}
			if apiErr.Message == "" {
				t.Fatal("empty message")
			}
		})
	}
}
