// Package cluster holds what the servers of one control plane share and
// how a server joins them: the bundle of shared material a running server
// hands a joining one, sealed to the holder of the server join token;
// whether a server may leave without costing the store its quorum; and
// each server's presence in the store. (Host heartbeats reach the leader
// through the liveness controller's shared records.)
package cluster

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// BundleVersion is the version of the bundle's layout.
const BundleVersion = 1

// Bundle is what a joining server receives from the server it joins: the
// material every server of the control plane holds the same, and its own
// place in the store's cluster.
type Bundle struct {
	Version int `json:"version"`
	// CACert and CAKey are the servers' CA (PEM): each server issues its
	// own server certificate from it.
	CACert []byte `json:"caCert"`
	CAKey  []byte `json:"caKey"`
	// SecretKey seals the providers' passwords (internal/secrets).
	SecretKey []byte `json:"secretKey"`
	// AdminToken and MetricsToken are the tokens of <data-dir>/admin.token
	// and metrics.token, which work on every server.
	AdminToken   string `json:"adminToken"`
	MetricsToken string `json:"metricsToken"`
	// PeerToken is the joining server's own token, which it presents to
	// the other servers (merged audit queries, image copies, consoles).
	PeerToken string `json:"peerToken"`
	// Name is the joining server's name, as registered.
	Name string `json:"name"`
	// MemberID is the etcd member the joining server was added as, and
	// InitialCluster the cluster's members then ("name=url,..."); both
	// empty when the servers share an external etcd.
	MemberID       uint64 `json:"memberId,omitempty"`
	InitialCluster string `json:"initialCluster,omitempty"`
}

// sealInfo binds the sealing key to its use.
const sealInfo = "polyvisor server join bundle v1"

// sealKey derives the bundle's key from the join token: only its holder
// can open what was sealed for it.
func sealKey(joinToken string) ([]byte, error) {
	if joinToken == "" {
		return nil, errors.New("sealing the join bundle: no join token")
	}
	return hkdf.Key(sha256.New, []byte(joinToken), nil, sealInfo, 32)
}

// Seal encrypts b for the holder of joinToken (AES-256-GCM under a key
// derived from it), bound to the joining server's name.
func Seal(b *Bundle, joinToken string) (string, error) {
	raw, err := json.Marshal(b)
	if err != nil {
		return "", fmt.Errorf("sealing the join bundle: %w", err)
	}
	aead, err := bundleAEAD(joinToken)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("sealing the join bundle: %w", err)
	}
	return base64.StdEncoding.EncodeToString(aead.Seal(nonce, nonce, raw, []byte(b.Name))), nil
}

// Open decrypts a bundle sealed for joinToken and the server name, and
// checks what it holds.
func Open(sealed, joinToken, name string) (*Bundle, error) {
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil {
		return nil, errors.New("opening the join bundle: not base64")
	}
	aead, err := bundleAEAD(joinToken)
	if err != nil {
		return nil, err
	}
	n := aead.NonceSize()
	if len(raw) < n {
		return nil, errors.New("opening the join bundle: too short")
	}
	plain, err := aead.Open(nil, raw[:n], raw[n:], []byte(name))
	if err != nil {
		return nil, errors.New("opening the join bundle: it was not sealed for this join token and server name")
	}
	var b Bundle
	if err := json.Unmarshal(plain, &b); err != nil {
		return nil, fmt.Errorf("opening the join bundle: %w", err)
	}
	switch {
	case b.Version != BundleVersion:
		return nil, fmt.Errorf("opening the join bundle: version %d, this server knows %d (run the same Polyvisor version on every server)", b.Version, BundleVersion)
	case b.Name != name:
		return nil, fmt.Errorf("opening the join bundle: it is for server %q, not %q", b.Name, name)
	case len(b.CACert) == 0 || len(b.CAKey) == 0 || len(b.SecretKey) == 0 || b.PeerToken == "" || b.AdminToken == "" || b.MetricsToken == "":
		return nil, errors.New("opening the join bundle: it lacks shared material")
	}
	return &b, nil
}

func bundleAEAD(joinToken string) (cipher.AEAD, error) {
	key, err := sealKey(joinToken)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("sealing the join bundle: %w", err)
	}
	return cipher.NewGCM(block)
}
