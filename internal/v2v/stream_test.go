package v2v

import (
	"context"
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
	if _, err := os.Stat(filepath.Join(dir, "job", "lv", "root.stream")); !os.IsNotExist(err) {
		t.Errorf("staged stream kept: %v", err)
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
