package admission

import (
	"errors"
	"fmt"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// TestLost: an admission that lost its race every time is answered
// unavailable (nothing was made; the request may be sent again), not as
// the version conflict the store reported; other errors are kept.
func TestLost(t *testing.T) {
	raced := fmt.Errorf("storing: %w", &store.KeyError{Op: "update", Kind: Kind, Name: "hosts/h1", Err: store.ErrConflict})
	var ae *api.Error
	if err := Lost(raced); !errors.As(err, &ae) || ae.Code != api.CodeUnavailable || !errors.Is(err, store.ErrConflict) {
		t.Errorf("Lost(%v) = %v, want unavailable wrapping the conflict", raced, err)
	}
	exists := &store.KeyError{Op: "create", Kind: "vms", Name: "default/v", Err: store.ErrExists}
	if err := Lost(exists); err != error(exists) {
		t.Errorf("Lost(%v) = %v, want it unchanged", exists, err)
	}
}
