package cluster

import (
	"strings"
	"testing"
)

func testBundle() *Bundle {
	return &Bundle{Version: BundleVersion, Name: "s2", CACert: []byte("cert"), CAKey: []byte("key"), SecretKey: make([]byte, 32),
		AdminToken: "pva_a", MetricsToken: "pvm_m", PeerToken: "pvp_p", MemberID: 0xabc, InitialCluster: "s1=https://a:7444,s2=https://b:7444"}
}

// TestBundleOpensOnlyForItsTokenAndName: a sealed bundle opens with the
// join token and server name it was sealed for, and with nothing else;
// what it carries is hidden from whoever sees it without the token.
func TestBundleOpensOnlyForItsTokenAndName(t *testing.T) {
	b := testBundle()
	sealed, err := Seal(b, "pvc_tok")
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{"pva_a", "pvm_m", "pvp_p", "key", "s1=https"} {
		if strings.Contains(sealed, secret) {
			t.Fatalf("the sealed bundle shows %q", secret)
		}
	}
	got, err := Open(sealed, "pvc_tok", "s2")
	if err != nil {
		t.Fatal(err)
	}
	if got.PeerToken != "pvp_p" || got.MemberID != 0xabc || got.InitialCluster != b.InitialCluster || string(got.CAKey) != "key" {
		t.Fatalf("opened %+v", got)
	}
	for _, c := range []struct{ tok, name, want string }{
		{"pvc_other", "s2", "not sealed for this join token"},
		{"pvc_tok", "s3", "not sealed for this join token and server name"},
		{"", "s2", "no join token"},
	} {
		if _, err := Open(sealed, c.tok, c.name); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Open with token %q name %q: %v, want %q", c.tok, c.name, err, c.want)
		}
	}
	// A bit flipped anywhere is refused.
	raw := []byte(sealed)
	raw[len(raw)/2] ^= 1
	if _, err := Open(string(raw), "pvc_tok", "s2"); err == nil {
		t.Fatal("a tampered bundle opened")
	}
}

// TestBundleRefusesWhatLacksMaterial: a bundle without the shared
// material, or of another version, is refused with a clear error.
func TestBundleRefusesWhatLacksMaterial(t *testing.T) {
	b := testBundle()
	b.SecretKey = nil
	sealed, err := Seal(b, "t")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(sealed, "t", "s2"); err == nil || !strings.Contains(err.Error(), "lacks shared material") {
		t.Fatalf("a bundle without the secrets key: %v", err)
	}
	b = testBundle()
	b.Version = BundleVersion + 1
	sealed, _ = Seal(b, "t")
	if _, err := Open(sealed, "t", "s2"); err == nil || !strings.Contains(err.Error(), "same Polyvisor version") {
		t.Fatalf("a bundle of another version: %v", err)
	}
}
