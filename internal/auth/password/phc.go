package password

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Limits on what a stored hash may ask for. They are far above anything
// Hash produces, and stop a corrupt or hostile string from making Verify
// allocate gigabytes or run for minutes.
const (
	maxMemory  = 1 << 20 // KiB: 1 GiB
	maxTime    = 10
	maxThreads = 64
	minSaltLen = 8
	minKeyLen  = 16
	maxKeyLen  = 128
	maxSaltLen = 128
)

var errMalformed = errors.New("malformed hash")

// parse decodes and checks an argon2id PHC string.
func parse(encoded string) (phc, error) {
	// "", "argon2id", "v=19", "m=…,t=…,p=…", salt, key
	f := strings.Split(encoded, "$")
	if len(f) != 6 || f[0] != "" {
		return phc{}, fmt.Errorf("password: %w: want 5 $-separated fields", errMalformed)
	}
	if f[1] != "argon2id" {
		return phc{}, fmt.Errorf("password: %w: algorithm %q is not argon2id", errMalformed, f[1])
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return phc{}, fmt.Errorf("password: %w: unsupported version %q", errMalformed, f[2])
	}
	p, err := parseParams(f[3])
	if err != nil {
		return phc{}, fmt.Errorf("password: %w", err)
	}
	salt, err := decodeField("salt", f[4], minSaltLen, maxSaltLen)
	if err != nil {
		return phc{}, fmt.Errorf("password: %w", err)
	}
	key, err := decodeField("hash", f[5], minKeyLen, maxKeyLen)
	if err != nil {
		return phc{}, fmt.Errorf("password: %w", err)
	}
	return phc{params: p, salt: salt, key: key}, nil
}

// parseParams parses "m=<KiB>,t=<passes>,p=<threads>" in that order.
func parseParams(s string) (params, error) {
	kv := strings.Split(s, ",")
	if len(kv) != 3 {
		return params{}, fmt.Errorf("%w: parameters %q: want m=,t=,p=", errMalformed, s)
	}
	var vals [3]uint64
	for i, name := range []string{"m", "t", "p"} {
		v, ok := strings.CutPrefix(kv[i], name+"=")
		if !ok {
			return params{}, fmt.Errorf("%w: parameters %q: want %s= in position %d", errMalformed, s, name, i+1)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return params{}, fmt.Errorf("%w: parameter %s: %w", errMalformed, name, err)
		}
		vals[i] = n
	}
	m, t, p := vals[0], vals[1], vals[2]
	switch {
	case p < 1 || p > maxThreads:
		return params{}, fmt.Errorf("%w: p=%d out of range 1..%d", errMalformed, p, maxThreads)
	case t < 1 || t > maxTime:
		return params{}, fmt.Errorf("%w: t=%d out of range 1..%d", errMalformed, t, maxTime)
	case m < 8*p || m > maxMemory:
		return params{}, fmt.Errorf("%w: m=%d out of range %d..%d", errMalformed, m, 8*p, maxMemory)
	}
	return params{memory: uint32(m), time: uint32(t), threads: uint8(p)}, nil
}

func decodeField(name, s string, minLen, maxLen int) ([]byte, error) {
	b, err := base64.RawStdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", errMalformed, name, err)
	}
	if len(b) < minLen || len(b) > maxLen {
		return nil, fmt.Errorf("%w: %s is %d bytes, want %d..%d", errMalformed, name, len(b), minLen, maxLen)
	}
	return b, nil
}
