package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/polyvisor/polyvisor/internal/hypervisor"
)

// The agent persists each VM's driver handle as JSON in
// <state>/handles/<uid>.json, written atomically, so that a restarted agent
// finds the VMs that kept running.

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
	path := handlePath(w.a.cfg.StateDir, h.UID)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, raw, 0o600); err != nil {
		return fmt.Errorf("saving handle: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("saving handle: %w", err)
	}
	return nil
}

func removeHandle(stateDir, uid string) {
	_ = os.Remove(handlePath(stateDir, uid))
}

// loadHandles reads every persisted handle. A handle of a newer format than
// this agent knows is an error: guessing could start a second VM process.
func loadHandles(stateDir string) ([]*hypervisor.Handle, error) {
	entries, err := os.ReadDir(handleDir(stateDir))
	if err != nil {
		return nil, fmt.Errorf("reading handles: %w", err)
	}
	var out []*hypervisor.Handle
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		raw, err := os.ReadFile(filepath.Join(handleDir(stateDir), e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading handle %s: %w", e.Name(), err)
		}
		var h hypervisor.Handle
		if err := json.Unmarshal(raw, &h); err != nil {
			return nil, fmt.Errorf("decoding handle %s: %w", e.Name(), err)
		}
		if h.Version > hypervisor.HandleVersion {
			return nil, fmt.Errorf("handle %s has version %d; this agent knows up to %d", e.Name(), h.Version, hypervisor.HandleVersion)
		}
		out = append(out, &h)
	}
	return out, nil
}
