package v2v

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/polyvisor/polyvisor/internal/atomicfile"
)

// checkpoint is what a disk's copy has done, saved in the job directory
// after every step (and every CheckpointBytes of a stream), so that a
// restarted job goes on from there.
type checkpoint struct {
	// Mode is how a streamed disk is copied: modeDirect, modeStage, or
	// not decided yet.
	Mode string `json:"mode,omitempty"`
	// Offset is how far a streamed disk is in its staged file (or, in
	// modeDirect, its qcow2), synced; Hash the SHA-256 state of the
	// stream's bytes (in modeDirect, of its content digest) up to it.
	Offset int64  `json:"offset,omitempty"`
	Hash   []byte `json:"hash,omitempty"`
	// ContentOffset and GrainSize are, in modeVMDK, the disk offset of
	// the chunk the grain marker at Offset begins (the digest covers
	// the disk up to it) and the VMDK's grain size in bytes.
	ContentOffset int64 `json:"contentOffset,omitempty"`
	GrainSize     int64 `json:"grainSize,omitempty"`
	// VMDKTablesAtEnd: the VMDK's grain directory follows its grains, so
	// its stream must end with an end-of-stream marker.
	VMDKTablesAtEnd bool `json:"vmdkTablesAtEnd,omitempty"`
	// StreamSize is the stream's size when it began: a source that
	// changed size since starts over.
	StreamSize int64 `json:"streamSize,omitempty"`
	// Staged: the whole source is in the job directory (a stream read
	// back and matched its SHA-256, StreamSHA256; an OVA member
	// extracted).
	Staged       bool   `json:"staged,omitempty"`
	StreamSHA256 string `json:"streamSHA256,omitempty"`
	// Done: the qcow2 is converted and verified; SHA256 is its digest.
	Done         bool   `json:"done,omitempty"`
	Adapted      bool   `json:"adapted,omitempty"`
	AdaptError   string `json:"adaptError,omitempty"` // the conversion failed: compatible devices
	SourceFormat string `json:"sourceFormat,omitempty"`
	VirtualSize  int64  `json:"virtualSize,omitempty"`
	SHA256       string `json:"sha256,omitempty"`
	// QcowSize and QcowModTime are the done qcow2 file's size and
	// modification time (a disk written directly, whose SHA256 is its
	// content digest, not the file's).
	QcowSize    int64 `json:"qcowSize,omitempty"`
	QcowModTime int64 `json:"qcowModTime,omitempty"`
}

func loadCheckpoint(path string) (checkpoint, error) {
	var c checkpoint
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("reading checkpoint: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return checkpoint{}, fmt.Errorf("reading checkpoint %s: %w", path, err)
	}
	return c, nil
}

func saveCheckpoint(path string, c checkpoint) error {
	b, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("saving checkpoint: %w", err)
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return fmt.Errorf("saving checkpoint: %w", err)
	}
	return nil
}
