package v2v

import (
	"archive/tar"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// ReadOVA reads the hardware of the OVA (a tar of an OVF envelope and its
// disks) at file. Every member's name is checked first: an absolute name,
// one that climbs out of the package ("..") or a member that is not a
// regular file (a link, a device) refuses the whole package. Each disk
// must be a member; its source is that member of file. A manifest (.mf),
// when the package holds one, is checked: the envelope's digest now, each
// disk's as it is extracted; a member it lists that the package lacks, or
// a digest that differs, refuses the package.
func ReadOVA(file string, maxDisk int64) (Hardware, error) {
	f, err := os.Open(file)
	if err != nil {
		return Hardware{}, fmt.Errorf("opening OVA: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	members := map[string]int64{}
	var hw *Hardware
	var manifest map[string]Digest
	var envelopeName string
	envelopeSHA1, envelopeSHA256 := sha1.New(), sha256.New()
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Hardware{}, fmt.Errorf("reading OVA %s: %w", filepath.Base(file), err)
		}
		name, err := memberName(h)
		if err != nil {
			return Hardware{}, fmt.Errorf("OVA %s: %w", filepath.Base(file), err)
		}
		if h.Typeflag == tar.TypeDir {
			continue
		}
		if _, dup := members[name]; dup {
			return Hardware{}, fmt.Errorf("OVA %s: member %q appears twice: refused", filepath.Base(file), name)
		}
		members[name] = h.Size
		if strings.HasSuffix(strings.ToLower(name), ".ovf") {
			if hw != nil {
				return Hardware{}, fmt.Errorf("OVA %s holds more than one OVF envelope", filepath.Base(file))
			}
			body := io.TeeReader(tr, io.MultiWriter(envelopeSHA1, envelopeSHA256))
			parsed, err := ParseOVF(body, maxDisk)
			if err != nil {
				return Hardware{}, fmt.Errorf("OVA %s: %w", filepath.Base(file), err)
			}
			if _, err := io.Copy(io.Discard, body); err != nil {
				return Hardware{}, fmt.Errorf("reading OVA %s: %w", filepath.Base(file), err)
			}
			hw, envelopeName = &parsed, name
		}
		if strings.HasSuffix(strings.ToLower(name), ".mf") {
			if manifest != nil {
				return Hardware{}, fmt.Errorf("OVA %s holds more than one manifest", filepath.Base(file))
			}
			if manifest, err = parseManifest(tr); err != nil {
				return Hardware{}, fmt.Errorf("OVA %s: %w", filepath.Base(file), err)
			}
		}
	}
	if hw == nil {
		return Hardware{}, fmt.Errorf("OVA %s holds no OVF envelope (.ovf member)", filepath.Base(file))
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return Hardware{}, fmt.Errorf("opening OVA: %w", err)
	}
	for name := range manifest {
		if _, ok := members[name]; !ok {
			return Hardware{}, fmt.Errorf("OVA %s: its manifest lists %q, which the package does not hold: refused", filepath.Base(file), name)
		}
	}
	if d, ok := manifest[envelopeName]; ok {
		h := envelopeSHA256
		if d.Algorithm == "SHA1" {
			h = envelopeSHA1
		}
		if err := d.check(envelopeName, h); err != nil {
			return Hardware{}, fmt.Errorf("OVA %s: %w", filepath.Base(file), err)
		}
	}
	for i := range hw.Disks {
		s := &hw.Disks[i].Source
		if _, ok := members[s.Member]; !ok {
			return Hardware{}, fmt.Errorf("OVA %s: disk %q names member %q, which the package does not hold", filepath.Base(file), hw.Disks[i].Name, s.Member)
		}
		s.Path = abs
		if d, ok := manifest[s.Member]; ok {
			s.Digest = &d
		}
	}
	return *hw, nil
}

// memberName checks a tar member's name and type.
func memberName(h *tar.Header) (string, error) {
	name := h.Name
	switch {
	case name == "" || strings.HasPrefix(name, "/") || strings.Contains(name, `\`):
		return "", fmt.Errorf("member name %q is absolute or malformed: refused", name)
	case name == ".." || strings.HasPrefix(name, "../") || strings.Contains(name, "/../") || strings.HasSuffix(name, "/.."):
		return "", fmt.Errorf("member name %q climbs out of the package (path traversal): refused", name)
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeDir:
	default:
		return "", fmt.Errorf("member %q is not a regular file (tar type %q): refused", name, h.Typeflag)
	}
	return path.Clean(strings.TrimPrefix(name, "./")), nil
}

// ReadOVFFile reads the hardware of an unpacked OVF: its disks are files
// in the envelope's directory, which they may not leave, even through a
// symbolic link.
func ReadOVFFile(file string, maxDisk int64) (Hardware, error) {
	f, err := os.Open(file)
	if err != nil {
		return Hardware{}, fmt.Errorf("opening OVF: %w", err)
	}
	defer f.Close()
	hw, err := ParseOVF(f, maxDisk)
	if err != nil {
		return Hardware{}, fmt.Errorf("OVF %s: %w", filepath.Base(file), err)
	}
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return Hardware{}, fmt.Errorf("opening OVF: %w", err)
	}
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		return Hardware{}, fmt.Errorf("opening OVF: %w", err)
	}
	for i := range hw.Disks {
		d := &hw.Disks[i]
		p, err := filepath.EvalSymlinks(filepath.Join(dir, filepath.FromSlash(d.Source.Member)))
		if err != nil {
			return Hardware{}, fmt.Errorf("OVF disk %q: %w", d.Name, err)
		}
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			return Hardware{}, fmt.Errorf("OVF disk %q: %s resolves outside the envelope's directory: refused", d.Name, d.Source.Member)
		}
		d.Source = DiskSource{Kind: SourceFile, Path: p, Format: d.Source.Format}
	}
	return hw, nil
}

// extractMember copies member of the OVA at file to dst, stopping at max
// bytes.
func extractMember(ctx context.Context, file, member, dst string, max int64, digest *Digest) error {
	f, err := os.Open(file)
	if err != nil {
		return fmt.Errorf("opening OVA: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("OVA %s holds no member %q", filepath.Base(file), member)
		}
		if err != nil {
			return fmt.Errorf("reading OVA: %w", err)
		}
		name, err := memberName(h)
		if err != nil {
			return err
		}
		if name != member || h.Typeflag != tar.TypeReg {
			continue
		}
		if h.Size > max {
			return fmt.Errorf("OVA member %q is %d bytes, over the limit of %d: refused", member, h.Size, max)
		}
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return fmt.Errorf("extracting OVA member: %w", err)
		}
		var sum hash.Hash
		w := io.Writer(out)
		if digest != nil {
			sum = digest.newHash()
			w = io.MultiWriter(out, sum)
		}
		_, err = io.Copy(w, ctxReader{ctx, tr})
		if err == nil && sum != nil {
			err = digest.check(member, sum)
		}
		if err == nil {
			err = out.Sync()
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			os.Remove(dst)
			return fmt.Errorf("extracting OVA member %q: %w", member, err)
		}
		return nil
	}
}

// ctxReader stops reading once ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
