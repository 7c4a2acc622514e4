package v2v

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/testutil/guest"
)

// fileStream streams a file, failing once after failAt bytes of a read
// (0: never), and records the offsets it was opened at.
type fileStream struct {
	path   string
	failAt int64
	opens  []int64
}

func (s *fileStream) Size() int64 {
	fi, _ := os.Stat(s.path)
	return fi.Size()
}

func (s *fileStream) Open(_ context.Context, off int64) (io.ReadCloser, error) {
	s.opens = append(s.opens, off)
	f, err := os.Open(s.path)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, err
	}
	if s.failAt > 0 {
		n := s.failAt
		s.failAt = 0
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(io.LimitReader(f, n), errReader{}), f}, nil
	}
	return f, nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

// TestStreamResumes streams the guest's disk (as raw, as a libvirt volume
// download gives it), breaks the stream halfway, and runs the copy
// again: it resumes from the last checkpoint, not from zero, and the
// result is the guest's disk.
func TestStreamResumes(t *testing.T) {
	guest.RequireQEMU(t)
	g := guest.Build(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "vol.raw")
	convertGuest(t, g, "raw", "", raw)
	st := &fileStream{path: raw, failAt: 40 << 20}
	hw := Hardware{Name: "lv", VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "vda", Bus: BusVirtio, Source: DiskSource{Kind: SourceStream, Ref: "vol"}}}}
	p := PlanVM(hw, Options{Host: "h"})
	var last Progress
	c := &Copier{Dir: filepath.Join(dir, "job"), CheckpointBytes: 8 << 20,
		Streams:  func(context.Context, string, Disk) (Stream, error) { return st, nil },
		Progress: func(pr Progress) { last = pr }}
	_, err := c.CopyVM(context.Background(), p)
	if err == nil || !strings.Contains(err.Error(), "connection reset by peer") {
		t.Fatalf("first run: %v", err)
	}
	res, err := c.CopyVM(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.opens) != 2 || st.opens[0] != 0 || st.opens[1] != 40<<20 {
		t.Fatalf("stream opened at %v, want 0 then %d", st.opens, 40<<20)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, res[0].Path).CombinedOutput(); err != nil {
		t.Fatalf("the resumed copy differs: %v: %s", err, out)
	}
	if last.Phase != PhaseDone {
		t.Errorf("last progress %+v", last)
	}
	if last.Resumed != 0 || res[0].SourceFormat != "raw" {
		t.Errorf("last progress %+v, result %+v", last, res[0])
	}
	// Written straight into its qcow2: nothing was staged.
	if got := listFiles(t, filepath.Join(dir, "job")); len(got) != 2 {
		t.Errorf("job directory holds %v, want the qcow2 and its checkpoint", got)
	}
}

// TestStreamSourceChanged: a stream whose size changed since the
// checkpoint starts over rather than splicing two disks.
func TestStreamSourceChanged(t *testing.T) {
	dir := t.TempDir()
	raw := filepath.Join(dir, "vol.raw")
	os.WriteFile(raw, make([]byte, 4<<20), 0o600)
	st := &fileStream{path: raw, failAt: 2 << 20}
	hw := Hardware{Name: "lv", VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "vda", Bus: BusVirtio, Source: DiskSource{Kind: SourceStream}}}}
	c := &Copier{Dir: filepath.Join(dir, "job"), CheckpointBytes: 1 << 20,
		Streams: func(context.Context, string, Disk) (Stream, error) { return st, nil }}
	if _, err := c.CopyVM(context.Background(), PlanVM(hw, Options{Host: "h"})); err == nil {
		t.Fatal("first run did not fail")
	}
	os.WriteFile(raw, make([]byte, 6<<20), 0o600)
	if _, err := c.CopyVM(context.Background(), PlanVM(hw, Options{Host: "h"})); err != nil {
		t.Fatal(err)
	}
	if st.opens[1] != 0 {
		t.Fatalf("opened at %v after the source changed size, want 0", st.opens)
	}
}

// endlessStream is a stream of non-zero bytes, of unknown length unless
// sized, that counts what was read of it.
type endlessStream struct {
	size, length int64
	read         int64
	opens        int
}

func (s *endlessStream) Size() int64 { return s.size }

func (s *endlessStream) Open(context.Context, int64) (io.ReadCloser, error) {
	s.opens++
	return io.NopCloser(io.LimitReader(readerFunc(func(p []byte) (int, error) {
		for i := range p {
			p[i] = 0xab
		}
		s.read += int64(len(p))
		return len(p), nil
	}), s.length)), nil
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestStreamOverItsLimit: a stream longer than the largest disk allowed,
// or than its disk's declared capacity, is refused as soon as it is seen
// to be (not staged whole first, whether its length is known or not),
// and nothing of it is left in the job directory.
func TestStreamOverItsLimit(t *testing.T) {
	for _, tc := range []struct {
		name             string
		size, capacity   int64
		maxDisk, maxRead int64
		wantOpens        int
	}{
		{"unknown length over MaxDiskBytes", -1, 0, 1 << 20, 8 << 20, 1},
		{"unknown length over the capacity", -1, 2 << 20, 0, 10 << 20, 1},
		{"known length over MaxDiskBytes", 96 << 20, 0, 1 << 20, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			job := filepath.Join(t.TempDir(), "job")
			st := &endlessStream{size: tc.size, length: 96 << 20}
			hw := Hardware{Name: "lv", VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "vda", Bus: BusVirtio, CapacityBytes: tc.capacity, Source: DiskSource{Kind: SourceStream}}}}
			c := &Copier{Dir: job, MaxDiskBytes: tc.maxDisk, CheckpointBytes: 1 << 20,
				Streams: func(context.Context, string, Disk) (Stream, error) { return st, nil }}
			_, err := c.CopyVM(context.Background(), PlanVM(hw, Options{Host: "h"}))
			if err == nil || !strings.Contains(err.Error(), "over the limit") && !strings.Contains(err.Error(), "past") {
				t.Fatalf("copy: %v, want the stream refused over its limit", err)
			}
			if st.read > tc.maxRead || st.opens != tc.wantOpens {
				t.Errorf("read %d bytes in %d opens, want at most %d in %d", st.read, st.opens, tc.maxRead, tc.wantOpens)
			}
			if got := listFiles(t, job); len(got) != 0 {
				t.Errorf("job directory keeps %v", got)
			}
		})
	}
}

// swapStream serves first for its first open, killing the copy (cancel)
// after killAt bytes, and then for the next: a source whose bytes past
// a checkpoint differ from what the killed run wrote there.
type swapStream struct {
	first, then string
	killAt      int64
	cancel      context.CancelFunc
	opens       int
}

func (s *swapStream) Size() int64 { return (&fileStream{path: s.then}).Size() }

func (s *swapStream) Open(ctx context.Context, off int64) (io.ReadCloser, error) {
	s.opens++
	if s.opens == 1 {
		f, err := os.Open(s.first)
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(io.LimitReader(f, s.killAt), readerFunc(func([]byte) (int, error) {
			s.cancel()
			return 0, context.Canceled
		})), f}, nil
	}
	return (&fileStream{path: s.then}).Open(ctx, off)
}

// TestStreamDirectResumeRezeroes: a raw stream is written into its qcow2
// as it is read; a run killed past its last checkpoint leaves data there,
// which the run that resumes makes zeros again before it goes on (the
// stream's chunks of zeros are not written), so the disk is the stream's
// and not a splice. Zeros stay unallocated in the qcow2.
func TestStreamDirectResumeRezeroes(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.raw"), filepath.Join(dir, "b.raw")
	data := make([]byte, 16<<20)
	for i := 0; i < 2<<20; i++ {
		data[i] = byte(i*7 + 1) // the first 2 MiB: data
	}
	os.WriteFile(b, data, 0o600)
	for i := 8 << 20; i < 11<<20; i++ {
		data[i] = 0xcd // past the checkpoint at 8 MiB: data only in a
	}
	os.WriteFile(a, data, 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	st := &swapStream{first: a, then: b, killAt: 11 << 20, cancel: cancel}
	hw := Hardware{Name: "lv", VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "vda", Bus: BusVirtio, Source: DiskSource{Kind: SourceStream}}}}
	var resumed int64
	c := &Copier{Dir: filepath.Join(dir, "job"), CheckpointBytes: 8 << 20,
		Streams:  func(context.Context, string, Disk) (Stream, error) { return st, nil },
		Progress: func(p Progress) { resumed = max(resumed, p.Resumed) }}
	if _, err := c.CopyVM(ctx, PlanVM(hw, Options{Host: "h"})); !errors.Is(err, context.Canceled) {
		t.Fatalf("first run: %v", err)
	}
	res, err := c.CopyVM(context.Background(), PlanVM(hw, Options{Host: "h"}))
	if err != nil {
		t.Fatal(err)
	}
	if resumed != 8<<20 {
		t.Errorf("resumed at %d, want the checkpoint at %d", resumed, 8<<20)
	}
	if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", b, res[0].Path).CombinedOutput(); err != nil {
		t.Fatalf("the resumed copy is not the stream: %v: %s", err, out)
	}
	out, err := exec.Command("qemu-img", "map", "--output=json", "-f", "qcow2", res[0].Path).Output()
	if err != nil {
		t.Fatal(err)
	}
	var allocated int64
	var extents []struct {
		Length int64 `json:"length"`
		Data   bool  `json:"data"`
	}
	json.Unmarshal(out, &extents)
	for _, e := range extents {
		if e.Data {
			allocated += e.Length
		}
	}
	if allocated != 2<<20 {
		t.Errorf("%d bytes allocated in the qcow2, want the 2 MiB of data: %s", allocated, out)
	}
}

// TestStreamNotRawIsStaged: a stream whose first bytes (a VMDK that is
// not streamOptimized) or last sector (a fixed VHD's footer) are another
// format's is not written directly but staged and converted with an
// image import's checks.
func TestStreamNotRawIsStaged(t *testing.T) {
	guest.RequireQEMU(t)
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	data := make([]byte, 4<<20)
	for i := range 1 << 20 {
		data[i] = byte(i%251 + 1)
	}
	os.WriteFile(raw, data, 0o600)
	for _, f := range []struct{ format, opts string }{{"vmdk", "subformat=monolithicSparse"}, {"vpc", "subformat=fixed,force_size=on"}} {
		t.Run(f.format, func(t *testing.T) {
			img := filepath.Join(dir, "disk."+f.format)
			run(t, "qemu-img", "convert", "-f", "raw", "-O", f.format, "-o", f.opts, raw, img)
			hw := Hardware{Name: "lv", VCPUs: 1, MemoryMiB: 128, Disks: []Disk{{Name: "vda", Bus: BusVirtio, Source: DiskSource{Kind: SourceStream}}}}
			converted := false
			c := &Copier{Dir: filepath.Join(t.TempDir(), "job"),
				Streams:  func(context.Context, string, Disk) (Stream, error) { return &fileStream{path: img}, nil },
				Progress: func(p Progress) { converted = converted || p.Phase == PhaseConvert }}
			res, err := c.CopyVM(context.Background(), PlanVM(hw, Options{Host: "h"}))
			if err != nil {
				t.Fatal(err)
			}
			if !converted {
				t.Error("not staged and converted")
			}
			if res[0].SourceFormat != f.format {
				t.Errorf("source format %q, want %q", res[0].SourceFormat, f.format)
			}
			if out, err := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "qcow2", raw, res[0].Path).CombinedOutput(); err != nil {
				t.Fatalf("the copy differs: %v: %s", err, out)
			}
		})
	}
}
