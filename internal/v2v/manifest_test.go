package v2v

import (
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

// TestOVAManifestChecked: an OVA's manifest is checked: the envelope's
// digest when the package is read, each disk's (SHA-1 or SHA-256), read
// in place, before it is converted; a digest that differs, a listed member the package lacks
// or a line that cannot be checked refuses it, and a refused disk leaves
// nothing in the job directory.
func TestOVAManifestChecked(t *testing.T) {
	disk := make([]byte, 1<<20)
	copy(disk, "a disk of the package")
	ovf := []byte(envelope("vm", "disk.img", "1", "byte * 2^20", "", ""))
	s256 := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	s1 := func(b []byte) string { s := sha1.Sum(b); return hex.EncodeToString(s[:]) }
	other := append([]byte("altered"), disk[7:]...)
	for _, tc := range []struct {
		name, mf         string
		readErr, copyErr string
	}{
		{"sha256 of both", fmt.Sprintf("SHA256(vm.ovf)= %s\nSHA256(disk.img)= %s\n", s256(ovf), s256(disk)), "", ""},
		{"sha1 of both", fmt.Sprintf("SHA1(vm.ovf)= %s\nSHA1(disk.img)= %s\n", s1(ovf), s1(disk)), "", ""},
		{"disk altered", fmt.Sprintf("SHA256(vm.ovf)= %s\nSHA256(disk.img)= %s\n", s256(ovf), s256(other)), "", "its manifest says"},
		{"disk altered, sha1", fmt.Sprintf("SHA1(disk.img)= %s\n", s1(other)), "", "its manifest says"},
		{"envelope altered", fmt.Sprintf("SHA256(vm.ovf)= %s\n", s256(append(ovf, ' '))), "its manifest says", ""},
		{"member missing", fmt.Sprintf("SHA256(vm.ovf)= %s\nSHA256(disk2.img)= %s\n", s256(ovf), s256(disk)), "does not hold", ""},
		{"unknown algorithm", "SHA512(disk.img)= " + strings.Repeat("0", 128) + "\n", "is not ALGORITHM", ""},
		{"short digest", "SHA256(disk.img)= abcd\n", "hex digits", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ova := filepath.Join(dir, "x.ova")
			writeOVA(t, ova, tarMember{name: "vm.ovf", body: ovf}, tarMember{name: "vm.mf", body: []byte(tc.mf)}, tarMember{name: "disk.img", body: disk})
			hw, err := ReadOVA(ova, DefaultMaxDiskBytes)
			if tc.readErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.readErr) {
					t.Fatalf("ReadOVA: %v, want an error saying %q", err, tc.readErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if hw.Disks[0].Source.Digest == nil {
				t.Fatal("the disk's source carries no digest from the manifest")
			}
			job := filepath.Join(dir, "job")
			_, err = (&Copier{Dir: job}).CopyVM(context.Background(), PlanVM(hw, Options{Host: "h", NetworkMap: map[string]string{"*": "user"}}))
			if tc.copyErr == "" {
				if err != nil {
					t.Fatalf("copy of a package that matches its manifest: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.copyErr) {
				t.Fatalf("copy: %v, want an error saying %q", err, tc.copyErr)
			}
			if got := listFiles(t, job); len(got) != 0 {
				t.Errorf("job directory keeps %v", got)
			}
		})
	}
}
