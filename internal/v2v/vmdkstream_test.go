package v2v

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// testGrain is a grain of a hand-made VMDK: data compressed, unless
// comp gives the bytes after the marker (size its declared size, when
// set).
type testGrain struct {
	lba  uint64
	data []byte
	comp []byte
	size uint32
}

// testVMDK describes a hand-made streamOptimized VMDK.
type testVMDK struct {
	capacity, grain uint64 // sectors
	flags           uint32
	descriptor      string   // default: a streamOptimized one
	extra           [][]byte // sectors put before the tables
	truncate        bool     // no tables, footer or end-of-stream marker
	// gdInHeader: the grain directory said to be in the header's area
	// (as qemu-img writes it) and nothing after the grains.
	gdInHeader bool
}

// build writes the VMDK as VMware's format says and qemu reads it: the
// header (its grain directory at the end), the descriptor, the grains in
// the order given, a grain table for each 512 grains, the grain
// directory, the footer and the end-of-stream marker.
func (o testVMDK) build(t testing.TB, grains []testGrain) []byte {
	t.Helper()
	le := binary.LittleEndian
	const overhead = 128
	header := func(gd uint64) []byte {
		h := make([]byte, 512)
		copy(h, "KDMV")
		flags := o.flags
		if flags == 0 {
			flags = vmdkFlagCompressed | vmdkFlagMarkers | 1
		}
		le.PutUint32(h[4:], 3)
		le.PutUint32(h[8:], flags)
		le.PutUint64(h[12:], o.capacity)
		le.PutUint64(h[20:], o.grain)
		le.PutUint64(h[28:], 1)  // descriptor at sector 1
		le.PutUint64(h[36:], 20) // of 20 sectors
		le.PutUint32(h[44:], 512)
		le.PutUint64(h[56:], gd)
		le.PutUint64(h[64:], overhead)
		copy(h[73:], "\n \r\n")
		le.PutUint16(h[77:], vmdkCompressDeflate)
		return h
	}
	meta := func(val uint64, typ uint32) []byte {
		m := make([]byte, 512)
		le.PutUint64(m, val)
		le.PutUint32(m[12:], typ)
		return m
	}
	pad := func(b []byte) []byte { return append(b, make([]byte, (512-len(b)%512)%512)...) }
	if o.gdInHeader {
		o.truncate = true
	}
	gd0 := ^uint64(0)
	if o.gdInHeader {
		gd0 = 30
	}
	out := header(gd0)
	desc := o.descriptor
	if desc == "" {
		desc = "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\ncreateType=\"streamOptimized\"\n\nRW " + strconvItoa(int64(o.capacity)) + " SPARSE \"x.vmdk\"\n"
	}
	out = append(out, []byte(desc)...)
	out = append(out, make([]byte, overhead*512-len(out))...)
	gtes := map[uint64]uint32{} // grain → its marker's sector
	for _, g := range grains {
		comp := g.comp
		if comp == nil {
			var b bytes.Buffer
			zw := zlib.NewWriter(&b)
			zw.Write(g.data)
			zw.Close()
			comp = b.Bytes()
		}
		size := g.size
		if size == 0 {
			size = uint32(len(comp))
		}
		if o.grain > 0 {
			gtes[g.lba/o.grain] = uint32(len(out) / 512)
		}
		m := make([]byte, 12)
		le.PutUint64(m, g.lba)
		le.PutUint32(m[8:], size)
		out = append(out, pad(append(m, comp...))...)
	}
	for _, e := range o.extra {
		out = append(out, e...)
	}
	if o.truncate {
		return out
	}
	ngt := (o.capacity/o.grain + 511) / 512
	var gd []byte
	for i := uint64(0); i < ngt; i++ {
		out = append(out, meta(4, vmdkMarkerGT)...)
		gd = le.AppendUint32(gd, uint32(len(out)/512))
		gt := make([]byte, 2048)
		for j := uint64(0); j < 512; j++ {
			le.PutUint32(gt[j*4:], gtes[i*512+j])
		}
		out = append(out, gt...)
	}
	gd = pad(gd)
	out = append(out, meta(uint64(len(gd)/512), vmdkMarkerGD)...)
	gdAt := uint64(len(out) / 512)
	out = append(out, gd...)
	out = append(out, meta(1, vmdkMarkerFooter)...)
	out = append(out, header(gdAt)...)
	return append(out, meta(0, vmdkMarkerEOS)...)
}

// grainOf is a grain's worth of bytes that say where they are.
func grainOf(lba, sectors uint64) []byte {
	b := make([]byte, sectors*512)
	for i := range b {
		b[i] = byte(uint64(i)*7 + lba + 1)
	}
	return b
}

// vmdkCopy copies the VMDK at path as a streamed disk into a job
// directory under dir, telling which phases it went through.
func vmdkCopy(t *testing.T, dir, path string, maxDisk int64) ([]DiskResult, map[string]bool, error) {
	t.Helper()
	return vmdkCopyFrom(t, dir, &fileStream{path: path}, maxDisk)
}

// sizeless is a stream of unknown length, as an NFC lease's.
type sizeless struct{ *fileStream }

func (sizeless) Size() int64 { return -1 }

func vmdkCopyFrom(t *testing.T, dir string, st Stream, maxDisk int64) ([]DiskResult, map[string]bool, error) {
	t.Helper()
	var mu sync.Mutex
	phases := map[string]bool{}
	hw := Hardware{Name: "vm", VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "vda", Bus: BusVirtio, Source: DiskSource{Kind: SourceStream}}}}
	c := &Copier{Dir: filepath.Join(dir, "job"), MaxDiskBytes: maxDisk, CheckpointBytes: 1 << 20,
		Streams:  func(context.Context, string, Disk) (Stream, error) { return st, nil },
		Progress: func(p Progress) { mu.Lock(); phases[p.Phase] = true; mu.Unlock() }}
	res, err := c.CopyVM(context.Background(), PlanVM(hw, Options{Host: "h"}))
	return res, phases, err
}

// TestVMDKStreamHandMade: hand-made streamOptimized VMDKs in disk order
// (the last chunk a partial one, grains and zero chunks between them)
// are written directly and compare equal to their raw disk; grains out of
// disk order, which the direct copy cannot take, are staged and
// converted, with the same result.
func TestVMDKStreamHandMade(t *testing.T) {
	guest.RequireQEMU(t)
	const grain, capacity = 128, 16384 + 256 // 8 MiB and 128 KiB
	lbas := []uint64{0, 128, 4096, 8192 + 1024, 16384 + 128}
	raw := make([]byte, capacity*512)
	var grains []testGrain
	for _, l := range lbas {
		g := grainOf(l, grain)
		copy(raw[l*512:], g)
		grains = append(grains, testGrain{lba: l, data: g})
	}
	for _, tc := range []struct {
		name   string
		order  []int
		staged bool
	}{
		{"in disk order", []int{0, 1, 2, 3, 4}, false},
		{"out of order", []int{0, 2, 1, 3, 4}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var gs []testGrain
			for _, i := range tc.order {
				gs = append(gs, grains[i])
			}
			path, rawPath := filepath.Join(dir, "x.vmdk"), filepath.Join(dir, "x.raw")
			os.WriteFile(path, testVMDK{capacity: capacity, grain: grain}.build(t, gs), 0o600)
			os.WriteFile(rawPath, raw, 0o600)
			run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", rawPath, path) // the builder's VMDK is valid
			res, phases, err := vmdkCopy(t, dir, path, 0)
			if err != nil {
				t.Fatal(err)
			}
			if phases[PhaseConvert] != tc.staged {
				t.Errorf("phases %v: staged and converted %v, want %v", phases, phases[PhaseConvert], tc.staged)
			}
			if res[0].SourceFormat != "vmdk" || res[0].VirtualSize != capacity*512 {
				t.Errorf("result %+v", res[0])
			}
			if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", rawPath, res[0].Path).CombinedOutput(); err != nil {
				t.Fatalf("the copy differs: %v: %s", err, out)
			}
		})
	}
}

// TestVMDKStreamHostile: hand-made VMDK streams that lie (sizes, grain
// positions, compressed sizes, zlib data, markers, a missing end) are
// refused with an error naming what is wrong before anything is written
// outside the disk, and nothing of them is left in the job directory;
// ones the direct copy does not take (not streamOptimized, a parent
// disk named) go to staging and the image import's checks.
func TestVMDKStreamHostile(t *testing.T) {
	guest.RequireQEMU(t)
	const grain, capacity = 128, 4096 // 2 MiB
	good := func(l uint64) testGrain { return testGrain{lba: l, data: grainOf(l, grain)} }
	var bomb bytes.Buffer
	zw := zlib.NewWriter(&bomb)
	zw.Write(make([]byte, 64<<20))
	zw.Close()
	for _, tc := range []struct {
		name   string
		vmdk   testVMDK
		grains []testGrain
		want   string
	}{
		{"capacity over the largest disk", testVMDK{capacity: 1 << 40, grain: grain, truncate: true}, nil, "capacity of 1099511627776 sectors"},
		{"grain size not a power of two", testVMDK{capacity: capacity, grain: 100, truncate: true}, nil, "grainSize of 100 sectors is not a power of two"},
		{"grain size zero", testVMDK{capacity: capacity, grain: 0, truncate: true}, nil, "grainSize of 0 sectors"},
		{"grain past the capacity", testVMDK{capacity: capacity, grain: grain}, []testGrain{good(0), good(capacity)}, "outside the disk's 4096 sectors"},
		{"grain at a huge LBA", testVMDK{capacity: capacity, grain: grain}, []testGrain{{lba: 1 << 62, data: []byte{1}}}, "outside the disk"},
		{"grain off its boundary", testVMDK{capacity: capacity, grain: grain}, []testGrain{good(3)}, "not at a grain's boundary"},
		{"compressed size over its bound", testVMDK{capacity: capacity, grain: grain}, []testGrain{{lba: 0, comp: []byte{1}, size: 1 << 30}}, "over the bound"},
		{"zlib bomb", testVMDK{capacity: capacity, grain: grain}, []testGrain{{lba: 0, comp: bomb.Bytes()}}, "inflates to more than the grain's 65536 bytes"},
		{"corrupt zlib data", testVMDK{capacity: capacity, grain: grain}, []testGrain{{lba: 0, comp: []byte("not zlib at all")}}, "inflating"},
		{"ends before its end-of-stream marker", testVMDK{capacity: capacity, grain: grain, truncate: true}, []testGrain{good(0), good(128)}, "before its end-of-stream marker"},
		{"metadata marker of huge length", testVMDK{capacity: capacity, grain: grain, extra: [][]byte{metaMarker(1<<50, vmdkMarkerGT)}}, []testGrain{good(0)}, "past its limit"},
		{"marker of unknown type", testVMDK{capacity: capacity, grain: grain, extra: [][]byte{metaMarker(1, 9)}}, []testGrain{good(0)}, "unknown type 9"},
		{"a parent disk named (staged, then refused)", testVMDK{capacity: capacity, grain: grain,
			descriptor: "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=87654321\ncreateType=\"streamOptimized\"\nparentFileNameHint=\"/etc/shadow\"\nRW 4096 SPARSE \"x.vmdk\"\n"},
			[]testGrain{good(0)}, "backing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "x.vmdk")
			os.WriteFile(path, tc.vmdk.build(t, tc.grains), 0o600)
			_, _, err := vmdkCopy(t, dir, path, 64<<20)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("copy: %v, want an error saying %q", err, tc.want)
			}
			if got := listFiles(t, dir); len(got) != 1 {
				t.Errorf("files left: %v, want only the source", got)
			}
		})
	}
}

func metaMarker(val uint64, typ uint32) []byte {
	m := make([]byte, 512)
	binary.LittleEndian.PutUint64(m, val)
	binary.LittleEndian.PutUint32(m[12:], typ)
	return m
}

// TestVMDKStreamResumes: the guest's disk as a streamOptimized VMDK (as
// an ESXi's export lease sends it) is written into its qcow2 as it
// streams, never staged in the job directory; broken mid-stream, the
// copy resumes at its last checkpoint (a grain marker, not 0) and its
// result is the guest's disk, with the same digest as a copy that was
// not broken.
func TestVMDKStreamResumes(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	dir := t.TempDir()
	vmdk := filepath.Join(dir, "disk.vmdk")
	convertGuest(t, g, "vmdk", "subformat=streamOptimized", vmdk)
	fi, err := os.Stat(vmdk)
	if err != nil {
		t.Fatal(err)
	}
	failAt := fi.Size() / 2
	st := &fileStream{path: vmdk, failAt: failAt}
	hw := Hardware{Name: "esx", VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "disk-2000", Bus: BusSCSI, Source: DiskSource{Kind: SourceStream}}}}
	p := PlanVM(hw, Options{Host: "h"})
	job := filepath.Join(dir, "job")
	var staged []string
	var resumed, looked int64
	c := &Copier{Dir: job, CheckpointBytes: 1 << 20,
		Streams: func(context.Context, string, Disk) (Stream, error) { return st, nil },
		Progress: func(pr Progress) {
			resumed = max(resumed, pr.Resumed)
			if pr.Phase != PhaseStream {
				return
			}
			looked++
			for _, f := range listFiles(t, job) {
				if !strings.HasSuffix(f, ".qcow2.part") && !strings.HasSuffix(f, ".checkpoint.json") {
					staged = append(staged, f)
				}
			}
		}}
	if _, err := c.CopyVM(context.Background(), p); err == nil || !strings.Contains(err.Error(), "connection reset by peer") {
		t.Fatalf("first run: %v", err)
	}
	res, err := c.CopyVM(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.opens) != 2 || st.opens[0] != 0 || st.opens[1] <= 0 || st.opens[1] > failAt || st.opens[1]%512 != 0 {
		t.Fatalf("stream opened at %v, want 0 then a marker's offset before %d", st.opens, failAt)
	}
	if resumed <= 0 {
		t.Errorf("progress never said the copy resumed")
	}
	if looked < 2 {
		t.Errorf("the job directory was looked at %d times during the copy", looked)
	}
	if len(staged) > 0 {
		t.Errorf("the job directory held %v during the copy", staged)
	}
	if res[0].SourceFormat != "vmdk" {
		t.Errorf("result %+v", res[0])
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", g.Boot, res[0].Path).CombinedOutput(); err != nil {
		t.Fatalf("the resumed copy differs from the guest's disk: %v: %s", err, out)
	}
	if got := listFiles(t, job); len(got) != 2 {
		t.Errorf("job directory holds %v, want the qcow2 and its checkpoint", got)
	}
	// The same stream copied without a break: the same disk.
	whole := &Copier{Dir: filepath.Join(dir, "whole"), Streams: func(context.Context, string, Disk) (Stream, error) { return &fileStream{path: vmdk}, nil }}
	res2, err := whole.CopyVM(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if res2[0].SHA256 != res[0].SHA256 {
		t.Errorf("resumed copy's digest %s, unbroken copy's %s", res[0].SHA256, res2[0].SHA256)
	}
	t.Logf("%d-byte stream, broken at %d, resumed at %d", fi.Size(), failAt, st.opens[1])
}

// TestVMDKStreamChangedAtCheckpoint: a source whose bytes at the
// checkpoint are no longer the grain marker the copy stopped at (one
// that compresses differently on each export) is not spliced: the copy
// starts over, from 0, and its result is the new stream's disk.
func TestVMDKStreamChangedAtCheckpoint(t *testing.T) {
	guest.RequireQEMU(t)
	const grain, capacity = 128, 8192 // 4 MiB: a grain in each chunk
	var grains []testGrain
	for _, l := range []uint64{0, 2048, 4096, 6144} {
		grains = append(grains, testGrain{lba: l, data: grainOf(l, grain)})
	}
	dir := t.TempDir()
	a := testVMDK{capacity: capacity, grain: grain}.build(t, grains)
	// The markers: the third grain's (chunk 2) and the fourth's.
	var markers []int64
	for off := int64(128 * 512); len(markers) < 4; {
		markers = append(markers, off)
		n := int64(binary.LittleEndian.Uint32(a[off+8:]))
		off += (12 + n + 511) / 512 * 512
	}
	b := bytes.Clone(a)
	clear(b[markers[2] : markers[2]+512]) // an end-of-stream marker there
	pa, pb := filepath.Join(dir, "a.vmdk"), filepath.Join(dir, "b.vmdk")
	os.WriteFile(pa, a, 0o600)
	os.WriteFile(pb, b, 0o600)
	st := &fileStream{path: pa, failAt: markers[3] + 100}
	hw := Hardware{Name: "vm", VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "vda", Bus: BusVirtio, Source: DiskSource{Kind: SourceStream}}}}
	p := PlanVM(hw, Options{Host: "h"})
	c := &Copier{Dir: filepath.Join(dir, "job"), CheckpointBytes: 1,
		Streams: func(context.Context, string, Disk) (Stream, error) { return st, nil }}
	if _, err := c.CopyVM(context.Background(), p); err == nil || !strings.Contains(err.Error(), "connection reset by peer") {
		t.Fatalf("first run: %v", err)
	}
	st.path = pb
	if _, err := c.CopyVM(context.Background(), p); err == nil || !strings.Contains(err.Error(), "not the grain marker it was there: starting over") {
		t.Fatalf("second run: %v, want the changed source seen", err)
	}
	res, err := c.CopyVM(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.opens) != 3 || st.opens[1] != markers[2] || st.opens[2] != 0 {
		t.Fatalf("stream opened at %v, want 0, %d (the checkpoint), then 0", st.opens, markers[2])
	}
	raw := make([]byte, capacity*512)
	copy(raw, grains[0].data)
	copy(raw[2048*512:], grains[1].data)
	rawPath := filepath.Join(dir, "b.raw")
	os.WriteFile(rawPath, raw, 0o600)
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", rawPath, res[0].Path).CombinedOutput(); err != nil {
		t.Fatalf("the copy is not the new stream's disk: %v: %s", err, out)
	}
}

// TestVMDKStreamQemuLayout: qemu-img writes a streamOptimized VMDK's
// grain tables in its header's area and no end-of-stream marker after
// its grains. Of known length, such a stream ends with its last grain and
// is written directly; of unknown length (an end that may be a cut) it is
// staged, where qemu-img reads its tables; cut inside its last grain, it
// is refused.
func TestVMDKStreamQemuLayout(t *testing.T) {
	guest.RequireQEMU(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	data := make([]byte, 4<<20)
	for i := range 1 << 20 {
		data[i] = byte(i%251 + 1)
	}
	for i := len(data) - 64<<10; i < len(data); i++ {
		data[i] = byte(i%13 + 1) // the last grain holds data
	}
	os.WriteFile(raw, data, 0o600)
	vmdk := filepath.Join(dir, "disk.vmdk")
	run(t, "qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", raw, vmdk)
	b, _ := os.ReadFile(vmdk)
	if binary.LittleEndian.Uint64(b[56:]) == vmdkGDAtEnd {
		t.Fatal("qemu-img's VMDK has its tables at the end: not the layout tested")
	}
	// qemu-img grows the file in steps: the zero sectors past its last
	// grain (which would read as an end-of-stream marker) are dropped,
	// as a file that ends where its last grain does.
	for bytes.Equal(b[len(b)-512:], make([]byte, 512)) {
		b = b[:len(b)-512]
	}
	os.WriteFile(vmdk, b, 0o600)
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "vmdk", raw, vmdk)
	cut := filepath.Join(dir, "cut.vmdk")
	os.WriteFile(cut, b[:len(b)-512+20], 0o600) // inside the last grain
	for _, tc := range []struct {
		name   string
		st     Stream
		staged bool
		want   string
	}{
		{"known length", &fileStream{path: vmdk}, false, ""},
		{"unknown length", sizeless{&fileStream{path: vmdk}}, true, ""},
		{"cut inside its last grain", &fileStream{path: cut}, false, "inside a marker or a grain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, phases, err := vmdkCopyFrom(t, t.TempDir(), tc.st, 0)
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("copy: %v, want an error saying %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if phases[PhaseConvert] != tc.staged {
				t.Errorf("phases %v: staged %v, want %v", phases, phases[PhaseConvert], tc.staged)
			}
			if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, res[0].Path).CombinedOutput(); err != nil {
				t.Fatalf("the copy differs: %v: %s", err, out)
			}
		})
	}
}

// A descriptor's place that wraps round 2^64 is refused, not taken for a
// descriptor within the header's area (whose check for a parent disk it
// would skip); a header without an embedded descriptor is left to
// staging, whose checks look for a parent as QEMU does.
func TestVMDKHeaderDescriptorBounds(t *testing.T) {
	const grain, capacity = 128, 4096
	desc := "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=87654321\ncreateType=\"monolithicSparse\"\nparentFileNameHint=\"/etc/shadow\"\nRW 4096 SPARSE \"x.vmdk\"\n"
	b := testVMDK{capacity: capacity, grain: grain, descriptor: desc}.build(t, []testGrain{{lba: 0, data: grainOf(0, grain)}})
	if _, err := parseVMDKHeader(b[:512], 64<<20); err != nil {
		t.Fatalf("the header as made: %v", err)
	}
	h := bytes.Clone(b[:512])
	binary.LittleEndian.PutUint64(h[28:], ^uint64(0))
	if _, err := parseVMDKHeader(h, 64<<20); err == nil || errors.Is(err, errNotStreamable) || !strings.Contains(err.Error(), "does not lie within") {
		t.Fatalf("descriptor at sector 2^64-1: %v, want refused", err)
	}
	binary.LittleEndian.PutUint64(h[28:], 0)
	if _, err := parseVMDKHeader(h, 64<<20); !errors.Is(err, errNotStreamable) {
		t.Fatalf("no embedded descriptor: %v, want it staged", err)
	}
}
