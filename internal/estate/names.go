package estate

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
)

var nonLabel = regexp.MustCompile(`[^a-z0-9-]+`)

// sanitize turns a native name ("DC0_H0_VM0", "web 1.example.com") into a
// DNS label Polyvisor can use ("dc0-h0-vm0").
func sanitize(s string) string {
	s = strings.Trim(nonLabel.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if len(s) > 50 {
		s = strings.Trim(s[:50], "-")
	}
	if s == "" {
		s = "x"
	}
	return s
}

// uniqueName is the Polyvisor name for a native object: its sanitized name,
// or, when that is taken by another object, the name with a short hash of
// the provider and native id appended.
func uniqueName(native, provider, id string, taken func(string) bool) string {
	n := sanitize(native)
	if !taken(n) {
		return n
	}
	sum := sha256.Sum256([]byte(provider + "/" + id))
	return strings.Trim(n[:min(len(n), 50)], "-") + "-" + hex.EncodeToString(sum[:])[:8]
}
