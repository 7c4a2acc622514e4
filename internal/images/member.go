package images

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf8"
)

// Member is a disk image held in a byte range of a file, read in place:
// a disk of an OVA (a tar) converted without a staging copy. qemu-img
// opens it by a json: name that puts the image's format driver over
// QEMU's raw driver with the range's offset and size, over the file: the
// image sees only its range, as if it were a file of its own, and the
// checks of Import apply to it as to a file.
type Member struct {
	// File holds the image.
	File string
	// Offset and Size are the image's range in File, in bytes.
	Offset, Size int64
}

// source checks the member's range against its file.
func (m Member) source() (diskSource, error) {
	abs, err := safePath(m.File)
	if err != nil {
		return diskSource{}, err
	}
	if !utf8.ValidString(abs) {
		// The json: name qemu-img opens would carry U+FFFD for the bad
		// bytes: another file than the one checked here.
		return diskSource{}, fmt.Errorf("opening image: the path %q is not valid UTF-8: refused", abs)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return diskSource{}, fmt.Errorf("opening image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return diskSource{}, fmt.Errorf("opening image: %s is not a regular file", abs)
	}
	if m.Size == 0 {
		return diskSource{}, rejectf("image is empty")
	}
	if m.Offset < 0 || m.Size < 0 || m.Offset > fi.Size() || m.Size > fi.Size()-m.Offset {
		return diskSource{}, rejectf("image's range of %d bytes at offset %d is not within its %d-byte file: refused", m.Size, m.Offset, fi.Size())
	}
	return diskSource{path: abs, member: &m}, nil
}

// diskSource is what qemu-img reads a disk image from: the whole file at
// path (absolute), or a member of it.
type diskSource struct {
	path   string
	member *Member
}

// fileSource is the whole file at path.
func fileSource(path string) (diskSource, error) {
	abs, err := safePath(path)
	return diskSource{path: abs}, err
}

// detect is detect of the file or of the member's range alone.
func (s diskSource) detect() (string, error) {
	if s.member == nil {
		return detect(s.path)
	}
	f, err := os.Open(s.path)
	if err != nil {
		return "", fmt.Errorf("opening image: %w", err)
	}
	defer f.Close()
	return detectReader(io.NewSectionReader(f, s.member.Offset, s.member.Size), s.member.Size)
}

// rangeNode is QEMU's raw driver over a file, limited to a range: a
// member's protocol layer.
type rangeNode struct {
	Driver string   `json:"driver"`
	Offset int64    `json:"offset"`
	Size   int64    `json:"size"`
	File   fileNode `json:"file"`
}

type fileNode struct {
	Driver   string `json:"driver"`
	Filename string `json:"filename"`
}

func (s diskSource) rangeNode() rangeNode {
	return rangeNode{Driver: "raw", Offset: s.member.Offset, Size: s.member.Size, File: fileNode{Driver: "file", Filename: s.path}}
}

// arg is the name qemu-img opens the image of format by: its absolute
// path, or for a member a json: name made here from the checked range.
func (s diskSource) arg(format string) string {
	if s.member == nil {
		return s.path
	}
	return "json:" + jsonText(struct {
		Driver string    `json:"driver"`
		File   rangeNode `json:"file"`
	}{format, s.rangeNode()})
}

// ownExtent tells whether name, a file qemu-img says the image reads (a
// vmdk's extent), is the image's own file or range and nothing else.
func (s diskSource) ownExtent(name string) bool {
	if s.member == nil {
		return name == s.path
	}
	text, ok := strings.CutPrefix(name, "json:")
	if !ok {
		return false
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	var got rangeNode
	if err := dec.Decode(&got); err != nil || dec.More() {
		return false
	}
	return got == s.rangeNode()
}

// jsonText is v as JSON, without HTML escapes.
func jsonText(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // plain strings and numbers: it cannot fail
	return strings.TrimSpace(b.String())
}

// ImportMember is Import of the disk image m: checked as Import checks a
// file (format, references to other files, qemu-img's view of it, its
// virtual and converted sizes), after its range was held within its
// file, and converted to a qcow2 at dst straight from its range.
func ImportMember(ctx context.Context, m Member, dst string, progress func(pct int), opts ...ImportOption) (Result, error) {
	var cfg importConfig
	for _, o := range opts {
		o(&cfg)
	}
	p := newReporter(progress)
	src, err := m.source()
	if err != nil {
		return Result{}, err
	}
	absDst, err := newDestination(dst)
	if err != nil {
		return Result{}, err
	}
	res, err := importDisk(ctx, src, absDst, cfg, p)
	if err != nil {
		return Result{}, err
	}
	p.set(100)
	logger().Info("imported image", "dst", absDst, "kind", "disk", "source", src.path, "offset", m.Offset, "bytes", m.Size,
		"source_format", res.SourceFormat, "size", res.SizeBytes, "virtual_size", res.VirtualSizeBytes)
	return res, nil
}

// CompareMember is Compare of the member a (of formatA) with the file b.
func CompareMember(ctx context.Context, formatA string, a Member, formatB, b string) error {
	src, err := a.source()
	if err != nil {
		return err
	}
	if b, err = safePath(b); err != nil {
		return err
	}
	return compare(ctx, formatA, src.arg(formatA), formatB, b)
}
