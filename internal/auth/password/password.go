// Package password hashes and verifies user passwords with argon2id, and
// holds the policy new passwords must meet.
//
// Hashes are stored as PHC strings:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// with the salt and hash in unpadded standard base64. Verify reads the
// parameters from the string, so the cost can be raised for new hashes
// while old ones still verify.
//
// A login handler should call Verify for a known user and VerifyDummy for
// an unknown one, so both cases take the same path and time.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"fmt"
	"sync"

	"golang.org/x/crypto/argon2"
)

// Parameters for new hashes: the OWASP minimum for argon2id.
const (
	defaultTime    = 2
	defaultMemory  = 19 * 1024 // KiB: 19 MiB
	defaultThreads = 1
	defaultKeyLen  = 32
	saltLen        = 16
)

// params are argon2id's cost parameters as a PHC string spells them.
type params struct {
	memory  uint32 // KiB
	time    uint32
	threads uint8
}

var defaultParams = params{memory: defaultMemory, time: defaultTime, threads: defaultThreads}

// Hash hashes password with argon2id under a fresh random salt, and
// returns the PHC string to store.
func Hash(password string) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("password: reading salt: %w", err)
	}
	h := phc{params: defaultParams, salt: salt}
	h.key = h.derive(password, defaultKeyLen)
	return h.String(), nil
}

// Verify reports whether password matches encoded, a PHC string made by
// Hash (possibly with other parameters). It returns an error, and false,
// if encoded is malformed or asks for unreasonable parameters.
func Verify(password, encoded string) (bool, error) {
	h, err := parse(encoded)
	if err != nil {
		return false, err
	}
	return h.matches(password), nil
}

// dummy is a real hash of a fixed password for VerifyDummy to spend its
// work on, computed on first use.
var (
	dummyOnce sync.Once
	dummy     phc
)

// VerifyDummy does the work of a Verify against a hash made by Hash, and
// throws the result away. Call it when the user is unknown, so that an
// unknown user and a wrong password cost the same.
func VerifyDummy(password string) {
	dummyOnce.Do(func() {
		salt := make([]byte, saltLen)
		_, _ = rand.Read(salt) // crypto/rand.Read never fails
		dummy = phc{params: defaultParams, salt: salt}
		dummy.key = dummy.derive("polyvisor dummy password", defaultKeyLen)
	})
	// Go through the same parse and compare as Verify.
	h, err := parse(dummy.String())
	if err != nil {
		return
	}
	_ = h.matches(password)
}

// phc is a parsed argon2id PHC string.
type phc struct {
	params
	salt []byte
	key  []byte
}

func (h phc) derive(password string, keyLen uint32) []byte {
	return argon2.IDKey([]byte(password), h.salt, h.time, h.memory, h.threads, keyLen)
}

func (h phc) matches(password string) bool {
	got := h.derive(password, uint32(len(h.key)))
	return subtle.ConstantTimeCompare(got, h.key) == 1
}

// String encodes h as a PHC string.
func (h phc) String() string {
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, h.memory, h.time, h.threads,
		b64.EncodeToString(h.salt), b64.EncodeToString(h.key))
}
