package server

import (
	"fmt"
	"testing"

	"github.com/polyvisor/polyvisor/api"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// TestStoreUnavailableIs503: a write that timed out while the store's
// members elected a raft leader may still be committed, so it is answered
// 503 (repeat it, with its idempotency key), never 500.
func TestStoreUnavailableIs503(t *testing.T) {
	t.Parallel()
	for _, e := range []error{rpctypes.ErrTimeout, rpctypes.ErrTimeoutDueToLeaderFail, rpctypes.ErrLeaderChanged, rpctypes.ErrNoLeader, rpctypes.ErrGRPCNoLeader} {
		err := fmt.Errorf("storing vm \"a\": commit transaction of 6 operations: %w", e)
		if got := toAPIError(err); got.Code != api.CodeUnavailable {
			t.Errorf("%v: code %q, want %q", e, got.Code, api.CodeUnavailable)
		}
	}
	if got := toAPIError(fmt.Errorf("other: %w", fmt.Errorf("boom"))); got.Code != api.CodeInternal {
		t.Errorf("an unknown error: code %q", got.Code)
	}
}
