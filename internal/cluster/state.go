package cluster

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/polyvisor/polyvisor/internal/atomicfile"
)

// StateFile is the file of the data dir that says how this server takes
// part in the control plane.
const StateFile = "cluster.json"

// State is what a server keeps of its place among the servers.
type State struct {
	// Name is the server's name among the servers.
	Name string `json:"name"`
	// PeerURL is where its etcd member is reached by the others.
	PeerURL string `json:"peerURL,omitempty"`
	// Joined says the server joined a running control plane, and
	// InitialCluster is the etcd cluster's members then; its etcd starts
	// from the others' data the first time.
	Joined         bool   `json:"joined,omitempty"`
	InitialCluster string `json:"initialCluster,omitempty"`
	MemberID       uint64 `json:"memberId,omitempty"`
	// JoinedFrom is the URL of the server it joined through.
	JoinedFrom string `json:"joinedFrom,omitempty"`
}

// LoadState reads the state of dataDir; ok is false when there is none.
func LoadState(dataDir string) (*State, bool, error) {
	raw, err := os.ReadFile(filepath.Join(dataDir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading the server's cluster state: %w", err)
	}
	var st State
	if err := json.Unmarshal(raw, &st); err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", filepath.Join(dataDir, StateFile), err)
	}
	return &st, true, nil
}

// SaveState writes the state of dataDir.
func SaveState(dataDir string, st *State) error {
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("saving the server's cluster state: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dataDir, StateFile), raw, 0o600); err != nil {
		return fmt.Errorf("saving the server's cluster state: %w", err)
	}
	return nil
}
