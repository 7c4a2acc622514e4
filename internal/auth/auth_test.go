package auth

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

func TestNewToken(t *testing.T) {
	seen := map[string]bool{}
	for _, prefix := range []string{PrefixAPI, PrefixHost, PrefixJoin, "x9_"} {
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
	tok, _ := NewToken(PrefixAPI)
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
	other, _ := NewToken(PrefixAPI)
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

func TestAuthorize(t *testing.T) {
	super := Identity{Kind: KindUser, Name: "root", Superadmin: true}
	alice := Identity{Kind: KindUser, Name: "alice"}
	narrowed := Identity{Kind: KindUser, Name: "alice", Project: "a", Role: api.RoleViewer}
	superNarrowed := Identity{Kind: KindUser, Name: "root", Superadmin: true, Project: "a", Role: api.RoleOperator}
	h1 := Identity{Kind: KindHost, Name: "h1"}
	nameless := Identity{Kind: KindHost}
	anon := Anonymous

	const (
		ok     = ""
		unauth = api.CodeUnauthorized
		forb   = api.CodeForbidden
		hidden = api.CodeNotFound
	)
	inA := func(role string) Facts { return Facts{Project: "a", ProjectExists: true, MemberRole: role} }
	tests := []struct {
		name string
		rule Rule
		id   Identity
		f    Facts
		want string
	}{
		{"public anon", Public, anon, Facts{}, ok},
		{"public host", Public, h1, Facts{}, ok},
		{"user anon", User, anon, Facts{}, unauth},
		{"user alice", User, alice, Facts{}, ok},
		{"user host", User, h1, Facts{}, forb},
		{"superadmin super", Superadmin, super, Facts{}, ok},
		{"superadmin alice", Superadmin, alice, Facts{}, forb},
		{"superadmin narrowed", Superadmin, superNarrowed, Facts{}, forb},
		{"superadmin host", Superadmin, h1, Facts{}, forb},
		{"self own", Self, alice, Facts{User: "alice"}, ok},
		{"self other", Self, alice, Facts{User: "bob"}, forb},
		{"self super", Self, super, Facts{User: "bob"}, ok},
		{"self narrowed own", Self, narrowed, Facts{User: "alice"}, forb},
		{"self super narrowed own", Self, superNarrowed, Facts{User: "root"}, forb},
		{"self super narrowed other", Self, superNarrowed, Facts{User: "alice"}, forb},
		{"self project-only narrowed", Self, Identity{Kind: KindUser, Name: "alice", Project: "a"}, Facts{User: "alice"}, forb},
		{"self host", Self, h1, Facts{User: "h1"}, forb},
		{"self anon", Self, anon, Facts{User: "alice"}, unauth},
		{"account alice", Account, alice, Facts{}, ok},
		{"account super", Account, super, Facts{}, ok},
		{"account narrowed", Account, narrowed, Facts{}, forb},
		{"account super narrowed", Account, superNarrowed, Facts{}, forb},
		{"account host", Account, h1, Facts{}, forb},
		{"account anon", Account, anon, Facts{}, unauth},
		{"host own", Host, h1, Facts{Host: "h1"}, ok},
		{"host other", Host, h1, Facts{Host: "h2"}, forb},
		{"host unknown", Host, h1, Facts{}, hidden},
		{"host user", Host, super, Facts{Host: "h1"}, forb},
		{"anyhost", AnyHost, h1, Facts{}, ok},
		{"anyhost nameless", AnyHost, nameless, Facts{}, forb},
		{"anyhost user", AnyHost, alice, Facts{}, forb},
		{"project viewer reads", In(PermVMRead), alice, inA(api.RoleViewer), ok},
		{"project viewer powers", In(PermVMPower), alice, inA(api.RoleViewer), forb},
		{"project operator powers", In(PermVMPower), alice, inA(api.RoleOperator), ok},
		{"project operator creates", In(PermVMCreate), alice, inA(api.RoleOperator), forb},
		{"project member creates", In(PermVMCreate), alice, inA(api.RoleMember), ok},
		{"project member manages", In(PermMemberManage), alice, inA(api.RoleMember), forb},
		{"project admin manages", In(PermMemberManage), alice, inA(api.RoleAdmin), ok},
		{"project stranger hidden", In(PermVMRead), alice, inA(""), hidden},
		{"project missing hidden", In(PermVMRead), alice, Facts{Project: "zz"}, hidden},
		{"project missing super", In(PermVMRead), super, Facts{Project: "zz"}, hidden},
		{"project super", In(PermMemberManage), super, inA(""), ok},
		{"project narrowed in scope", In(PermVMRead), narrowed, inA(api.RoleAdmin), ok},
		{"project narrowed above role", In(PermVMPower), narrowed, inA(api.RoleAdmin), forb},
		{"project narrowed other project", In(PermVMRead), narrowed, Facts{Project: "b", ProjectExists: true, MemberRole: api.RoleAdmin}, hidden},
		{"project super narrowed", In(PermVMPower), superNarrowed, inA(""), ok},
		{"project super narrowed above", In(PermVMCreate), superNarrowed, inA(""), forb},
		{"project host", In(PermVMRead), h1, inA(""), forb},
		{"project anon", In(PermVMRead), anon, inA(""), unauth},
		{"project all-projects", In(PermVMRead), alice, Facts{AllProjects: true}, ok},
		{"no rule", Rule{}, super, Facts{}, forb},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Authorize(tt.id, tt.rule, tt.f)
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
			if apiErr.Code != tt.want || apiErr.Message == "" {
				t.Fatalf("code %q (%v), want %q with a message", apiErr.Code, apiErr, tt.want)
			}
		})
	}
}

func TestRolesAreCumulative(t *testing.T) {
	for i := 1; i < len(api.Roles); i++ {
		lower, higher := RolePermissions(api.Roles[i-1]), RolePermissions(api.Roles[i])
		for _, p := range lower {
			if !RoleAllows(api.Roles[i], p) {
				t.Errorf("role %s lacks %s that %s has", api.Roles[i], p, api.Roles[i-1])
			}
		}
		if len(higher) <= len(lower) {
			t.Errorf("role %s adds nothing to %s", api.Roles[i], api.Roles[i-1])
		}
	}
	if RolePermissions("root") != nil || ValidRole("root") {
		t.Error("an unknown role has permissions")
	}
}
