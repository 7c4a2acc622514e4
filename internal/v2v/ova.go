package v2v

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/polyvisor/polyvisor/internal/images"
)

// ReadOVA reads the hardware of the OVA (a tar of an OVF envelope and its
// disks) at file. Every member's name is checked first: an absolute name,
// one that climbs out of the package ("..") or a member that is not a
// regular file (a link, a device, a sparse member) refuses the whole
// package, and so does a member whose bytes would reach past the end of
// the package. Each disk must be a member; its source is that member of
// file, read in place when it is copied. A manifest (.mf), when the
// package holds one, is checked: the envelope's digest now, each disk's
// before it is converted; a member it lists that the package lacks, or a
// digest that differs, refuses the package.
func ReadOVA(file string, maxDisk int64) (Hardware, error) {
	f, err := os.Open(file)
	if err != nil {
		return Hardware{}, fmt.Errorf("opening OVA: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Hardware{}, fmt.Errorf("opening OVA: %w", err)
	}
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
		if _, err := memberRange(f, fi.Size(), name, h); err != nil {
			return Hardware{}, fmt.Errorf("OVA %s: %w", filepath.Base(file), err)
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

// memberRange is the byte range in the package (an open file of size
// bytes) of the member h, which tar just read the header of: its data
// follows, contiguous, unless it is sparse, which is refused. A range
// that would reach past the package's end is refused.
func memberRange(f *os.File, size int64, name string, h *tar.Header) (images.Member, error) {
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return images.Member{}, fmt.Errorf("member %q is a sparse tar member: refused", name)
		}
	}
	off, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return images.Member{}, fmt.Errorf("reading OVA: %w", err)
	}
	if h.Size < 0 || off > size || h.Size > size-off {
		return images.Member{}, fmt.Errorf("member %q declares %d bytes at offset %d, past the end of the %d-byte package: refused", name, h.Size, off, size)
	}
	return images.Member{File: f.Name(), Offset: off, Size: h.Size}, nil
}

// locateMember finds the disk member of the OVA at file, to be read in
// place: its names checked as ReadOVA checks them, its range within the
// package and held to max bytes, and named once only. The tar reader and
// the range agree on its first bytes.
func locateMember(file, member string, max int64) (images.Member, error) {
	f, err := os.Open(file)
	if err != nil {
		return images.Member{}, fmt.Errorf("opening OVA: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return images.Member{}, fmt.Errorf("opening OVA: %w", err)
	}
	tr := tar.NewReader(f)
	var found *images.Member
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return images.Member{}, fmt.Errorf("reading OVA: %w", err)
		}
		name, err := memberName(h)
		if err != nil {
			return images.Member{}, err
		}
		if name != member || h.Typeflag != tar.TypeReg {
			continue
		}
		if found != nil {
			return images.Member{}, fmt.Errorf("OVA member %q appears twice: refused", member)
		}
		m, err := memberRange(f, fi.Size(), name, h)
		if err != nil {
			return images.Member{}, err
		}
		if m.Size > max {
			return images.Member{}, fmt.Errorf("OVA member %q is %d bytes, over the limit of %d: refused", member, m.Size, max)
		}
		head := make([]byte, min(m.Size, 4096))
		at := make([]byte, len(head))
		if _, err := io.ReadFull(tr, head); err != nil {
			return images.Member{}, fmt.Errorf("reading OVA member %q: %w", member, err)
		}
		if _, err := f.ReadAt(at, m.Offset); err != nil || !bytes.Equal(head, at) {
			return images.Member{}, fmt.Errorf("OVA member %q is not where its header puts it: refused", member)
		}
		found = &m
	}
	if found == nil {
		return images.Member{}, fmt.Errorf("OVA %s holds no member %q", filepath.Base(file), member)
	}
	return *found, nil
}

// checkMemberDigest reads the member in place and holds it to the
// manifest's digest.
func checkMemberDigest(ctx context.Context, m images.Member, name string, digest *Digest, meter *meter) error {
	f, err := os.Open(m.File)
	if err != nil {
		return fmt.Errorf("opening OVA: %w", err)
	}
	defer f.Close()
	sum := digest.newHash()
	r := ctxReader{ctx, io.NewSectionReader(f, m.Offset, m.Size)}
	buf := make([]byte, 1<<20)
	var done int64
	for {
		n, err := r.Read(buf)
		sum.Write(buf[:n])
		done += int64(n)
		meter.set(done, false)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading OVA member %q: %w", name, err)
		}
	}
	meter.set(done, true)
	return digest.check(name, sum)
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
