// Package secrets encrypts credentials Polyvisor must keep (a provider's
// password) before they reach the store: AES-256-GCM with a key kept in the
// data dir (0600), never in the store. Each sealed value is bound to what it
// belongs to (additional data), so a value copied onto another object does
// not open.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

const keySize = 32

// Box seals and opens values with one key.
type Box struct {
	aead cipher.AEAD
}

// Load reads the key at path, creating it (0600) the first time.
func Load(path string) (*Box, error) {
	key, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key = make([]byte, keySize)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("making the secrets key: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("making the secrets key: %w", err)
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, key, 0o600); err != nil {
			return nil, fmt.Errorf("writing the secrets key: %w", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, fmt.Errorf("writing the secrets key: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("reading the secrets key: %w", err)
	}
	if len(key) != keySize {
		return nil, fmt.Errorf("secrets key %s has %d bytes, want %d", path, len(key), keySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext bound to context (such as "provider/vc1").
func (b *Box) Seal(plaintext, context string) (string, error) {
	nonce := make([]byte, b.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("sealing a secret: %w", err)
	}
	out := b.aead.Seal(nonce, nonce, []byte(plaintext), []byte(context))
	return base64.StdEncoding.EncodeToString(out), nil
}

// Open decrypts a sealed value for the same context.
func (b *Box) Open(sealed, context string) (string, error) {
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil || len(raw) < b.aead.NonceSize() {
		return "", errors.New("opening a secret: malformed value")
	}
	n := b.aead.NonceSize()
	pt, err := b.aead.Open(nil, raw[:n], raw[n:], []byte(context))
	if err != nil {
		return "", errors.New("opening a secret: wrong key or context")
	}
	return string(pt), nil
}

// The servers of one control plane share one key: a provider's password
// sealed by one opens on every other. A joining server receives the key
// of one already running (ReadKey there, InstallKey here).

// ReadKey returns the key at path.
func ReadKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the secrets key: %w", err)
	}
	if len(key) != keySize {
		return nil, fmt.Errorf("secrets key %s has %d bytes, want %d", path, len(key), keySize)
	}
	return key, nil
}

// InstallKey writes a key received from another server at path. A path
// that already holds that key is left as it is; one holding another key
// is refused: what it sealed would no longer open.
func InstallKey(path string, key []byte) error {
	if len(key) != keySize {
		return fmt.Errorf("installing the secrets key: %d bytes, want %d", len(key), keySize)
	}
	if have, err := os.ReadFile(path); err == nil {
		if subtle.ConstantTimeCompare(have, key) == 1 {
			return nil
		}
		return fmt.Errorf("installing the secrets key: %s already holds another key; a joining server needs a data dir of its own", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("installing the secrets key: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("installing the secrets key: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, key, 0o600); err != nil {
		return fmt.Errorf("installing the secrets key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("installing the secrets key: %w", err)
	}
	return nil
}
