package v2v

import (
	"bufio"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"path"
	"regexp"
	"strings"
)

// maxManifestBytes bounds an OVA's manifest: a line per member.
const maxManifestBytes = 64 << 10

// manifestLine is one digest of an OVF manifest (.mf):
// "SHA256(disk1.vmdk)= 3b1f..." (ovftool writes no space before "=").
var manifestLine = regexp.MustCompile(`^(SHA1|SHA256)\s*\(([^()]+)\)\s*=\s*([0-9a-fA-F]+)$`)

// Digest is a member's digest as a manifest lists it.
type Digest struct {
	Algorithm string `json:"algorithm"` // SHA1 or SHA256
	Hex       string `json:"hex"`
}

// parseManifest reads an OVF manifest: member name to digest. A line it
// cannot read, an algorithm other than SHA-1 or SHA-256 or a member named
// twice refuses the package: a manifest that cannot be checked is not
// taken as checked.
func parseManifest(r io.Reader) (map[string]Digest, error) {
	out := map[string]Digest{}
	sc := bufio.NewScanner(io.LimitReader(r, maxManifestBytes+1))
	read := 0
	for sc.Scan() {
		read += len(sc.Bytes()) + 1
		if read > maxManifestBytes {
			return nil, fmt.Errorf("manifest is over %d bytes: refused", maxManifestBytes)
		}
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		m := manifestLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("manifest line %q is not ALGORITHM(member)= digest with SHA1 or SHA256: refused", truncate(line, 80))
		}
		want := map[string]int{"SHA1": sha1.Size, "SHA256": sha256.Size}[m[1]] * 2
		if len(m[3]) != want {
			return nil, fmt.Errorf("manifest digest of %q is %d hex digits, %s has %d: refused", m[2], len(m[3]), m[1], want)
		}
		name := path.Clean(strings.TrimPrefix(strings.TrimSpace(m[2]), "./"))
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("manifest lists %q twice: refused", name)
		}
		out[name] = Digest{Algorithm: m[1], Hex: strings.ToLower(m[3])}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	return out, nil
}

// newHash is the hash of a manifest's algorithm.
func (d Digest) newHash() hash.Hash {
	if d.Algorithm == "SHA1" {
		return sha1.New()
	}
	return sha256.New()
}

// check compares what h summed with the digest.
func (d Digest) check(member string, h hash.Hash) error {
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
		return fmt.Errorf("member %q has %s %s, its manifest says %s: the package is damaged or altered, refused", member, d.Algorithm, got, d.Hex)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
