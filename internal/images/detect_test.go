package images

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/testutil/peer"
)

// countingReader is an io.ReaderAt that counts the bytes asked of it.
type countingReader struct {
	r    io.ReaderAt
	read atomic.Int64
}

func (c *countingReader) ReadAt(p []byte, off int64) (int, error) {
	c.read.Add(int64(len(p)))
	return c.r.ReadAt(p, off)
}

// maxDetectRead bounds what detection may read of one image: the head,
// the tail, a qcow2 first cluster (2 MiB at most) and a vmdk descriptor.
const maxDetectRead = 4096 + sectorSize + 2<<20 + vmdkDescSize

// crafted are hand-made headers beside the committed corpus of real ones
// (testdata/fuzz, written by TestFuzzSeeds with qemu-img).
func crafted() [][]byte {
	qcow := make([]byte, 1024)
	copy(qcow, "QFI\xfb")
	binary.BigEndian.PutUint32(qcow[4:], 3)
	binary.BigEndian.PutUint32(qcow[20:], 16)
	binary.BigEndian.PutUint32(qcow[100:], 104)
	binary.BigEndian.PutUint32(qcow[104:], qcowExtDataFile)
	binary.BigEndian.PutUint32(qcow[108:], 4)
	copy(qcow[112:], "/dev")
	vmdk := make([]byte, 2048)
	copy(vmdk, "KDMV")
	binary.LittleEndian.PutUint64(vmdk[12:], 2048)
	binary.LittleEndian.PutUint64(vmdk[28:], 1)
	binary.LittleEndian.PutUint64(vmdk[36:], 1)
	copy(vmdk[512:], "parentFileNameHint=\"/x\"\n")
	return [][]byte{qcow, vmdk, []byte("conectix"), bytes.Repeat([]byte{0}, 512)}
}

// FuzzDetect feeds untrusted bytes to the format detection and header
// checks (detect.go). Whatever the input: no panic; every refusal is a
// *RejectError (a hostile image is the user's mistake, never a server
// error); at most maxDetectRead bytes are read; and what is accepted
// keeps the promises Import relies on — a qcow2 names no backing or data
// file, a vhd is not differencing, raw is whole sectors with no known
// format's magic.
func FuzzDetect(f *testing.F) {
	for _, b := range crafted() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &countingReader{r: bytes.NewReader(data)}
		format, err := detectReader(r, int64(len(data)))
		if n := r.read.Load(); n > maxDetectRead {
			t.Fatalf("detection read %d bytes of a %d-byte image", n, len(data))
		}
		if err != nil {
			if !IsReject(err) {
				t.Fatalf("refusal %v (%T) is not a *RejectError", err, err)
			}
			return
		}
		again, err2 := detectReader(bytes.NewReader(data), int64(len(data)))
		if again != format || err2 != nil {
			t.Fatalf("detection not deterministic: %q then %q, %v", format, again, err2)
		}
		be := binary.BigEndian
		switch format {
		case FormatQCOW2:
			if be.Uint64(data[8:]) != 0 || be.Uint32(data[16:]) != 0 {
				t.Fatal("accepted a qcow2 naming a backing file")
			}
			if be.Uint32(data[4:]) == 3 && be.Uint64(data[72:])&qcowIncompatDataFile != 0 {
				t.Fatal("accepted a qcow2 with an external data file")
			}
		case FormatVPC:
			footer := data[:sectorSize]
			if !bytes.HasPrefix(data, magicVPC) {
				footer = data[len(data)-sectorSize:]
			}
			if be.Uint32(footer[60:]) == 4 {
				t.Fatal("accepted a differencing vhd")
			}
		case FormatRaw:
			if len(data)%sectorSize != 0 {
				t.Fatalf("accepted %d bytes as raw", len(data))
			}
			for _, m := range [][]byte{magicQCOW, magicVMDK4, magicVMDK3, magicVHDX, magicVPC, vmdkDescTag} {
				if bytes.HasPrefix(data, m) {
					t.Fatalf("accepted an image starting with %q as raw", m)
				}
			}
		case FormatVMDK, FormatVHDX, FormatVDI:
		default:
			t.Fatalf("detected unknown format %q", format)
		}
	})
}

// FuzzInspect runs the whole inspection of an upload (inspect.go:
// detection, then qemu-img info and measure under their limits) on
// untrusted bytes, against the real qemu-img. Every outcome is success or
// a *RejectError, within a bound of time; and detection never accepts a
// file that qemu-img reads, in the format detected, as naming another
// file (which checkInfo would catch second: detection must catch it
// first, before qemu-img opens anything).
func FuzzInspect(f *testing.F) {
	peer.Binary(f, "qemu-img", "apt-get install qemu-utils")
	for _, b := range append(crafted(), corpusSeeds(f)...) {
		f.Add(b)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		tmp, err := os.CreateTemp(dir, "img-*")
		if err != nil {
			t.Fatal(err)
		}
		path := tmp.Name()
		defer os.Remove(path)
		_, err = tmp.Write(data)
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err = Inspect(ctx, path, api.ImageDisk, WithMaxVirtualBytes(1<<40))
		if ctx.Err() != nil {
			t.Fatalf("inspection ran past a minute: %v", err)
		}
		if err != nil && !IsReject(err) {
			t.Fatalf("inspection failed with %v (%T), not a *RejectError", err, err)
		}
		format, derr := detect(path)
		if derr != nil || format == FormatRaw {
			return
		}
		info, qerr := qemuInfo(ctx, format, path)
		if qerr != nil {
			return
		}
		abs, _ := filepath.Abs(path)
		if info.BackingFilename != "" || info.FormatSpecific.Data.DataFile != "" {
			t.Fatalf("detection accepted a %s that qemu-img reads as naming %q / %q", format,
				info.BackingFilename, info.FormatSpecific.Data.DataFile)
		}
		for _, e := range info.FormatSpecific.Data.Extents {
			if e.Filename != abs {
				t.Fatalf("detection accepted a vmdk with the extent %q", e.Filename)
			}
		}
	})
}

// TestDetectIOError: a failing read is the server's error, not the
// user's.
func TestDetectIOError(t *testing.T) {
	_, err := detectReader(failingReader{}, 4096)
	if err == nil || IsReject(err) {
		t.Fatalf("detectReader on a failing reader = %v, want a server error", err)
	}
}

type failingReader struct{}

func (failingReader) ReadAt([]byte, int64) (int, error) { return 0, errors.New("disk on fire") }
