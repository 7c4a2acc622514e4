package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/polyvisor/polyvisor/internal/atomicfile"
	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// The agent persists each VM's driver handle as JSON in
// <state>/handles/<uid>.json, written atomically and durably, so that a
// restarted agent finds the VMs that kept running.

// extraHost records in a handle the host the VM was made for, so that an
// agent started under another name never takes it for its own.
const extraHost = "polyvisor.host"

func handleDir(stateDir string) string { return filepath.Join(stateDir, "handles") }

func handlePath(stateDir, uid string) string {
	return filepath.Join(handleDir(stateDir), uid+".json")
}

// persist saves the worker's handle after a driver call that may have
// changed it.
func (w *worker) persist(h *hypervisor.Handle) error {
	if h.Extra == nil {
		h.Extra = map[string]string{}
	}
	h.Extra[extraHost] = w.a.cfg.Host
	w.setHandle(h)
	raw, err := json.MarshalIndent(h, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding handle: %w", err)
	}
	if err := atomicfile.Write(handlePath(w.a.cfg.StateDir, h.UID), raw, 0o600); err != nil {
		return fmt.Errorf("saving handle: %w", err)
	}
	return nil
}

func removeHandle(stateDir, uid string) {
	if err := os.Remove(handlePath(stateDir, uid)); err == nil {
		_ = atomicfile.SyncDir(handleDir(stateDir))
	}
}

// badHandle is a handle file the agent could not use. It stays where it
// is, for a person to look at: its VM is neither adopted nor made again,
// since guessing could start a second process for a VM that still runs.
type badHandle struct {
	UID  string // from the file's name
	Path string
	Err  error
}

func (b badHandle) String() string {
	return fmt.Sprintf("vm handle %s is unusable and was skipped: %v", b.Path, b.Err)
}

// loadHandles reads every persisted handle. A file that cannot be read or
// decoded, that names another VM than its file name, or whose format is
// newer than this agent knows is skipped and returned among the bad ones:
// one bad file never keeps the agent from starting.
func loadHandles(stateDir string) ([]*hypervisor.Handle, []badHandle, error) {
	dir := handleDir(stateDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("reading handles: %w", err)
	}
	var out []*hypervisor.Handle
	var bad []badHandle
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".json") || strings.HasPrefix(name, ".") {
			continue
		}
		uid := strings.TrimSuffix(name, ".json")
		path := filepath.Join(dir, name)
		h, err := readHandle(path, uid)
		if err != nil {
			bad = append(bad, badHandle{UID: uid, Path: path, Err: err})
			continue
		}
		out = append(out, h)
	}
	return out, bad, nil
}

func readHandle(path, uid string) (*hypervisor.Handle, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading: %w", err)
	}
	var h hypervisor.Handle
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	switch {
	case h.Version > hypervisor.HandleVersion:
		return nil, fmt.Errorf("format version %d is newer than this agent's %d", h.Version, hypervisor.HandleVersion)
	case h.UID != uid:
		return nil, fmt.Errorf("it names vm uid %q", h.UID)
	case h.Dir == "":
		return nil, errors.New("it names no vm directory")
	}
	return &h, nil
}
