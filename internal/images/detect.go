package images

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// Disk formats accepted on import, as qemu-img names them.
const (
	FormatQCOW2 = "qcow2"
	FormatRaw   = "raw"
	FormatVMDK  = "vmdk"
	FormatVPC   = "vpc" // VHD
	FormatVHDX  = "vhdx"
	FormatVDI   = "vdi"
)

const sectorSize = 512

var (
	magicQCOW   = []byte("QFI\xfb")
	magicVMDK4  = []byte("KDMV")
	magicVMDK3  = []byte("COWD")
	magicVHDX   = []byte("vhdxfile")
	magicVPC    = []byte("conectix")
	vmdkDescTag = []byte("# Disk DescriptorFile")
)

// unsupported lists other formats qemu knows by their first bytes; they
// are refused by name rather than imported as raw.
var unsupported = []struct {
	magic  string
	format string
}{
	{"QED\x00", "qed"},
	{"WithoutFreeSpace", "parallels"},
	{"WithouFreSpacExt", "parallels"},
	{"LUKS\xba\xbe", "luks"},
	{"Bochs Virtual HD Image", "bochs"},
	{"#!/bin/sh\n#V2.0 Format\nmodprobe cloop", "cloop"},
}

// detect reads the first bytes of the image at path and returns its
// format, refusing unsupported formats and any image that names another
// file. It never runs qemu-img: what it accepts is then safe to open.
func detect(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("opening image: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("opening image: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("opening image: %s is not a regular file", path)
	}
	return detectReader(f, fi.Size())
}

// detectReader is detect on an image of size bytes read through f.
func detectReader(f io.ReaderAt, size int64) (string, error) {
	if size == 0 {
		return "", rejectf("image is empty")
	}
	head := make([]byte, min(size, 4096))
	if _, err := f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading image header: %w", err)
	}
	var tail []byte
	if size >= sectorSize {
		tail = make([]byte, sectorSize)
		if _, err := f.ReadAt(tail, size-sectorSize); err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading image footer: %w", err)
		}
	}

	switch {
	case bytes.HasPrefix(head, magicQCOW):
		return FormatQCOW2, checkQCOW2(f, size)
	case bytes.HasPrefix(head, magicVMDK4):
		return FormatVMDK, checkVMDK(f, size)
	case bytes.HasPrefix(head, magicVMDK3):
		return "", rejectf("unsupported image format %q: only single-file vmdk 4 (monolithicSparse, streamOptimized) is accepted", "vmdk3")
	case bytes.HasPrefix(head, vmdkDescTag):
		return "", rejectf("image is a vmdk descriptor that references extent files: refused; upload a single-file vmdk (monolithicSparse or streamOptimized)")
	case bytes.HasPrefix(head, magicVHDX):
		return FormatVHDX, nil
	case len(head) >= 0x44 && binary.LittleEndian.Uint32(head[0x40:]) == 0xbeda107f:
		return FormatVDI, nil
	case bytes.HasPrefix(head, magicVPC):
		return FormatVPC, checkVPCFooter(head[:min(len(head), sectorSize)])
	case bytes.HasPrefix(tail, magicVPC):
		return FormatVPC, checkVPCFooter(tail)
	}
	for _, u := range unsupported {
		if bytes.HasPrefix(head, []byte(u.magic)) {
			return "", rejectf("unsupported image format %q", u.format)
		}
	}
	if bytes.HasPrefix(tail, []byte("koly")) {
		return "", rejectf("unsupported image format %q", "dmg")
	}
	if size%sectorSize != 0 {
		return "", rejectf("image is not a recognised disk image: not qcow2, vmdk, vpc, vhdx or vdi, and %d bytes is not a whole number of 512-byte sectors for a raw disk", size)
	}
	return FormatRaw, nil
}

// qcow2 header fields and features (docs/interop/qcow2.txt in QEMU).
const (
	qcowIncompatCorrupt  = 1 << 1
	qcowIncompatDataFile = 1 << 2
	qcowExtEnd           = 0x00000000
	qcowExtDataFile      = 0x44415441
	qcowMaxNameLen       = 4096
)

// checkQCOW2 refuses a qcow2 image whose header names a backing file or an
// external data file, is encrypted, marked corrupt, or malformed.
func checkQCOW2(r io.ReaderAt, size int64) error {
	var h [104]byte
	n, err := r.ReadAt(h[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading qcow2 header: %w", err)
	}
	if n < 72 {
		return rejectf("malformed qcow2 image: header truncated at %d bytes", n)
	}
	be := binary.BigEndian
	version := be.Uint32(h[4:])
	switch version {
	case 2, 3:
	case 1:
		return rejectf("unsupported image format %q (qcow version 1)", "qcow")
	default:
		return rejectf("malformed qcow2 image: unknown version %d", version)
	}
	if n < 104 && version == 3 {
		return rejectf("malformed qcow2 image: version 3 header truncated at %d bytes", n)
	}

	backingOff, backingLen := be.Uint64(h[8:]), be.Uint32(h[16:])
	if backingOff != 0 || backingLen != 0 {
		name, err := readName(r, size, backingOff, uint64(backingLen))
		if err != nil {
			return rejectf("image names a backing file (unreadable name: %v): refused", err)
		}
		return rejectf("image names a backing file %q: refused", name)
	}
	clusterBits := be.Uint32(h[20:])
	if clusterBits < 9 || clusterBits > 21 {
		return rejectf("malformed qcow2 image: cluster bits %d", clusterBits)
	}
	if crypt := be.Uint32(h[32:]); crypt != 0 {
		return rejectf("encrypted qcow2 images are not supported (crypt method %d)", crypt)
	}

	extStart, incompat := uint64(72), uint64(0)
	if version == 3 {
		incompat = be.Uint64(h[72:])
		if incompat&qcowIncompatCorrupt != 0 {
			return rejectf("qcow2 image is marked corrupt: refused")
		}
		extStart = uint64(be.Uint32(h[100:]))
		if extStart < 104 || extStart%8 != 0 {
			return rejectf("malformed qcow2 image: header length %d", extStart)
		}
	}
	// The extensions first, so that the data file is named when it can be.
	if err := checkQCOW2Extensions(r, size, extStart, uint64(1)<<clusterBits); err != nil {
		return err
	}
	if incompat&qcowIncompatDataFile != 0 {
		return rejectf("image uses an external data file: refused")
	}
	return nil
}

// checkQCOW2Extensions walks the header extensions, which lie between the
// header and the end of the first cluster, refusing an external data file.
func checkQCOW2Extensions(r io.ReaderAt, size int64, off, clusterSize uint64) error {
	end := min(clusterSize, uint64(size))
	be := binary.BigEndian
	for off+8 <= end {
		var eh [8]byte
		if _, err := r.ReadAt(eh[:], int64(off)); err != nil {
			return fmt.Errorf("reading qcow2 header extension: %w", err)
		}
		typ, length := be.Uint32(eh[:]), uint64(be.Uint32(eh[4:]))
		if typ == qcowExtEnd {
			return nil
		}
		off += 8
		if length > end-off {
			return rejectf("malformed qcow2 image: header extension 0x%08x overruns the first cluster", typ)
		}
		if typ == qcowExtDataFile {
			name, err := readName(r, size, off, length)
			if err != nil {
				return rejectf("image names an external data file (unreadable name: %v): refused", err)
			}
			return rejectf("image names an external data file %q: refused", name)
		}
		off += (length + 7) &^ 7
	}
	return nil
}

// readName reads a file name stored in an image header.
func readName(r io.ReaderAt, size int64, off, length uint64) (string, error) {
	if length == 0 || length > qcowMaxNameLen || off > uint64(size) || length > uint64(size)-off {
		return "", fmt.Errorf("%d bytes at offset %d", length, off)
	}
	b := make([]byte, length)
	if _, err := r.ReadAt(b, int64(off)); err != nil {
		return "", err
	}
	return string(b), nil
}

// vmdk sparse extent header (VMware "Virtual Disk Format 1.1").
const (
	// vmdkDescAt and vmdkDescSize are where QEMU looks for a sparse
	// vmdk's parent: 20 sectors from offset 512, whatever the header's
	// descriptor fields say (block/vmdk.c, vmdk_parent_open).
	vmdkDescAt   = 512
	vmdkDescSize = 20 * sectorSize
	vmdkParent   = "parentFileNameHint"
)

// checkVMDK accepts a single-file vmdk (monolithicSparse or
// streamOptimized) and refuses one QEMU would make open other files: an
// embedded descriptor with an extent list (QEMU reads it when the
// header's capacity is zero), or a parent named anywhere in the 20
// sectors from offset 512 (QEMU searches them for parentFileNameHint as
// a substring, up to the first NUL, and opens the name as a backing
// file).
func checkVMDK(r io.ReaderAt, size int64) error {
	var h [512]byte
	if _, err := r.ReadAt(h[:], 0); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading vmdk header: %w", err)
	}
	le := binary.LittleEndian
	if capacity, descOff := le.Uint64(h[12:]), le.Uint64(h[28:]); capacity == 0 && descOff != 0 {
		return rejectf("image is a vmdk whose embedded descriptor references extent files: refused")
	}
	if size <= vmdkDescAt {
		return nil
	}
	desc := make([]byte, min(vmdkDescSize, size-vmdkDescAt))
	if _, err := r.ReadAt(desc, vmdkDescAt); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("reading vmdk descriptor: %w", err)
	}
	desc, _, _ = bytes.Cut(desc, []byte{0})
	// Matched without regard to case: stricter than QEMU, never looser.
	i := bytes.Index(bytes.ToLower(desc), bytes.ToLower([]byte(vmdkParent)))
	if i < 0 {
		return nil
	}
	// The name as QEMU reads it: after the key and two characters (="),
	// up to the next quote.
	name := desc[min(len(desc), i+len(vmdkParent)+2):]
	if j := bytes.IndexByte(name, '"'); j >= 0 {
		return rejectf("image names a backing file %q: refused", name[:j])
	}
	return rejectf("image names a backing file (%s): refused", vmdkParent)
}

// checkVPCFooter refuses a differencing VHD, which names a parent disk.
func checkVPCFooter(footer []byte) error {
	if len(footer) < 64 {
		return rejectf("malformed vhd image: footer truncated")
	}
	switch t := binary.BigEndian.Uint32(footer[60:]); t {
	case 2, 3: // fixed, dynamic
		return nil
	case 4:
		return rejectf("image is a differencing vhd that names a parent disk: refused")
	default:
		return rejectf("malformed vhd image: disk type %d", t)
	}
}
