// Package auth holds Polyvisor's bearer tokens, the identities they stand
// for, and the access policies the API's route table puts beside each
// route.
//
// A token reads "<prefix><id>_<secret>": a readable prefix saying what it
// is for (pva_ API, pvs_ login session, pvh_ host, pvj_ join), a short non-secret id to look
// the token up by, and 256 random bits of secret, all in lowercase hex so a
// token is safe in URLs, headers and shells. Only Hash(token) is stored.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"strings"
)

// Token prefixes.
const (
	PrefixAPI     = "pva_" // API tokens (the first superadmin's among them)
	PrefixSession = "pvs_" // login sessions
	PrefixHost    = "pvh_"
	PrefixJoin    = "pvj_"
	PrefixMetrics = "pvm_" // the read-only metrics token
	// PrefixServerJoin is a server join token: a new server joins the
	// control plane with it.
	PrefixServerJoin = "pvc_"
	// PrefixPeer is a server's token, which it presents to the other
	// servers of the control plane.
	PrefixPeer = "pvp_"
)

const (
	idBytes     = 6  // 12 hex characters: a lookup key, not a secret
	secretBytes = 32 // 256 bits
)

// NewToken makes a new token with the given prefix, and returns it with
// its id. The prefix must be lowercase letters and digits ending in "_"
// (like PrefixAPI); NewToken panics otherwise, as that is a programming
// error.
func NewToken(prefix string) (token, id string) {
	if !validPrefix(prefix) {
		panic(fmt.Sprintf("auth: invalid token prefix %q", prefix))
	}
	b := make([]byte, idBytes+secretBytes)
	_, _ = rand.Read(b) // never fails: crypto/rand crashes the program instead
	id = hex.EncodeToString(b[:idBytes])
	return prefix + id + "_" + hex.EncodeToString(b[idBytes:]), id
}

// ParseToken splits a token into its prefix (with its "_") and id without
// checking the secret. ok is false when the token is not of the form
// NewToken makes.
func ParseToken(token string) (prefix, id string, ok bool) {
	i := strings.IndexByte(token, '_')
	if i < 1 || !validPrefix(token[:i+1]) {
		return "", "", false
	}
	prefix, rest := token[:i+1], token[i+1:]
	if len(rest) != 2*idBytes+1+2*secretBytes || rest[2*idBytes] != '_' ||
		!isHex(rest[:2*idBytes]) || !isHex(rest[2*idBytes+1:]) {
		return "", "", false
	}
	return prefix, rest[:2*idBytes], true
}

// Hash returns the lowercase hex SHA-256 of a token, the form in which
// tokens are stored. Tokens carry 256 random bits, so a fast hash is enough:
// there is nothing to brute-force.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Verify tells whether token hashes to storedHash, comparing in constant
// time.
func Verify(token, storedHash string) bool {
	h := Hash(token)
	return subtle.ConstantTimeCompare([]byte(h), []byte(storedHash)) == 1
}

func validPrefix(p string) bool {
	if len(p) < 2 || p[len(p)-1] != '_' || p[0] < 'a' || p[0] > 'z' {
		return false
	}
	for _, c := range p[1 : len(p)-1] {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
