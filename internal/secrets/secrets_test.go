package secrets

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret.key")
	b, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v", fi.Mode().Perm())
	}
	sealed, err := b.Seal("hunter2", "provider/vc1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sealed, "hunter2") {
		t.Fatal("sealed value shows the plaintext")
	}
	again, _ := b.Seal("hunter2", "provider/vc1")
	if again == sealed {
		t.Fatal("two seals of one value are equal: the nonce is not random")
	}
	b2, err := Load(path) // the same key, read back
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := b2.Open(sealed, "provider/vc1"); err != nil || pt != "hunter2" {
		t.Fatalf("open: %q %v", pt, err)
	}
	if _, err := b2.Open(sealed, "provider/vc2"); err == nil {
		t.Fatal("a value opened under another context")
	}
	other, _ := Load(filepath.Join(t.TempDir(), "other.key"))
	if _, err := other.Open(sealed, "provider/vc1"); err == nil {
		t.Fatal("a value opened with another key")
	}
	if _, err := b.Open("!!", "provider/vc1"); err == nil {
		t.Fatal("garbage opened")
	}
}

func TestLoadRefusesABadKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret.key")
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := Load(path); err == nil {
		t.Fatal("a short key was accepted")
	}
}
