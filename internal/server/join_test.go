package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/cluster"
	"github.com/polyvisor/polyvisor/internal/pki"
	"github.com/polyvisor/polyvisor/internal/secrets"
)

// freePort is a TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// TestServerJoinHandsOverSealed: POST /v1/cluster/join refuses what is not
// a server join token, a missing or malformed address, and a used token;
// a good join adds the new server's etcd member as a learner and answers
// the servers' CA, secrets key and admin token sealed so that only the
// token's holder, joining under that name, opens them; remove takes the
// member out again.
func TestServerJoinHandsOverSealed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Name: "s1", PeerListen: "127.0.0.1:" + strconv.Itoa(freePort(t))})
	ctx := context.Background()
	jt, err := e.super.CreateServerJoinToken(ctx, api.JoinTokenCreate{})
	if err != nil {
		t.Fatal(err)
	}
	agentJT, err := e.super.CreateJoinToken(ctx, api.JoinTokenCreate{})
	if err != nil {
		t.Fatal(err)
	}
	tokPart, fp := SplitJoinToken(jt.Token)
	forged := tokPart[:len(tokPart)-8] + "00000000." + fp // the right id, a wrong secret
	peerURL := "https://127.0.0.1:" + strconv.Itoa(freePort(t))
	good := api.ClusterJoin{JoinToken: jt.Token, Name: "s2", URL: "https://127.0.0.2:7443", PeerURL: peerURL}
	join := func(req api.ClusterJoin) (int, []byte) {
		b, _ := json.Marshal(req)
		st, body, _ := e.do("POST", "/v1/cluster/join", "", b)
		return st, body
	}
	for _, c := range []struct {
		what string
		req  api.ClusterJoin
		code int
		says string
	}{
		{"an agent's join token", api.ClusterJoin{JoinToken: agentJT.Token, Name: "s2", URL: good.URL, PeerURL: peerURL}, 401, "server join token"},
		{"a forged token", api.ClusterJoin{JoinToken: forged, Name: "s2", URL: good.URL, PeerURL: peerURL}, 401, "server join token"},
		{"no peer URL", api.ClusterJoin{JoinToken: jt.Token, Name: "s2", URL: good.URL}, 400, "peerURL"},
		{"a plain http URL", api.ClusterJoin{JoinToken: jt.Token, Name: "s2", URL: "http://127.0.0.2:7443", PeerURL: peerURL}, 400, "url"},
		{"a bad name", api.ClusterJoin{JoinToken: jt.Token, Name: "S 2", URL: good.URL, PeerURL: peerURL}, 400, "name"},
		{"the running server's name", api.ClusterJoin{JoinToken: jt.Token, Name: "s1", URL: good.URL, PeerURL: peerURL}, 409, "s1"},
	} {
		if st, body := join(c.req); st != c.code || !strings.Contains(string(body), c.says) {
			t.Errorf("join with %s: %d %s, want %d naming %q", c.what, st, body, c.code, c.says)
		}
	}
	// None of the refusals used the token up or added a member.
	if list, err := e.super.ListServers(ctx); err != nil || len(list) != 1 {
		t.Fatalf("servers after the refusals: %+v %v", list, err)
	}

	st, body := join(good)
	if st != 200 {
		t.Fatalf("join: %d %s", st, body)
	}
	var ans api.ClusterJoined
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"PRIVATE KEY", e.s.AdminToken()} {
		if bytes.Contains(body, []byte(secret)) {
			t.Fatalf("the join's answer holds %q in the clear", secret)
		}
	}
	tok := tokPart
	if _, err := cluster.Open(ans.Sealed, tok, "s3"); err == nil {
		t.Error("the bundle opened under another server's name")
	}
	other := tok[:len(tok)-1] + "0"
	if tok[len(tok)-1] == '0' {
		other = tok[:len(tok)-1] + "1"
	}
	if _, err := cluster.Open(ans.Sealed, other, "s2"); err == nil {
		t.Error("the bundle opened with another token")
	}
	b, err := cluster.Open(ans.Sealed, tok, "s2")
	if err != nil {
		t.Fatal(err)
	}
	caCert, caKey, err := pki.ReadCA(filepath.Join(e.dataDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := secrets.ReadKey(filepath.Join(e.dataDir, "secret.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.CACert, caCert) || !bytes.Equal(b.CAKey, caKey) || !bytes.Equal(b.SecretKey, key) || b.AdminToken != e.s.AdminToken() {
		t.Fatal("the bundle does not hold the server's CA, secrets key and admin token")
	}
	if ans.CAFingerprint != pki.Fingerprint(caCert) || b.PeerToken == "" || b.PeerToken == e.s.peerToken || b.MemberID == 0 {
		t.Fatalf("the join's answer: fingerprint %s, own token set %v, member %x", ans.CAFingerprint, b.PeerToken != "", b.MemberID)
	}

	// The token worked once.
	good.Name = "s3"
	if st, body := join(good); st != 401 {
		t.Fatalf("a second join with the same token: %d %s", st, body)
	}
	list, err := e.super.ListServers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var s2 *api.Server
	for i := range list {
		if list[i].Name == "s2" {
			s2 = &list[i]
		}
	}
	if len(list) != 2 || s2 == nil || !s2.Learner || s2.Healthy || s2.MemberID != cluster.FormatMemberID(b.MemberID) {
		t.Fatalf("servers after the join: %+v", list)
	}
	if err := e.super.RemoveServer(ctx, "s2"); err != nil {
		t.Fatal(err)
	}
	members, err := e.s.st.Members(ctx)
	if err != nil || len(members) != 1 {
		t.Fatalf("etcd members after the removal: %+v %v", members, err)
	}
	if err := e.super.RemoveServer(ctx, "s1"); client.ErrorCode(err) != api.CodeConflict {
		t.Fatalf("removing the last server: %v, want a conflict", err)
	}
}
