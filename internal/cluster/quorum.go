package cluster

import (
	"fmt"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// CheckRemoval tells whether the etcd member id may leave the cluster of
// members, healthy saying which members are up: a learner may always
// leave; the last voting member may not; and a voting member may leave
// only if the voting members left behind still have a quorum that is up.
// The error says why not, in the API's terms.
func CheckRemoval(members []store.Member, healthy map[uint64]bool, id uint64, name string) error {
	var voters []store.Member
	found := false
	for _, m := range members {
		if m.ID == id {
			found = true
			if m.Learner {
				return nil
			}
			continue
		}
		if !m.Learner {
			voters = append(voters, m)
		}
	}
	if !found {
		return nil
	}
	if len(voters) == 0 {
		return api.Conflict("server %q holds the last voting member of the store: a control plane needs one server", name)
	}
	up := 0
	for _, m := range voters {
		if healthy[m.ID] {
			up++
		}
	}
	if quorum := len(voters)/2 + 1; up < quorum {
		return api.Conflict("removing server %q would lose the store's quorum: of the %d voting members left, %d are up and a quorum needs %d; bring the others back first",
			name, len(voters), up, quorum)
	}
	return nil
}

// FormatMemberID is an etcd member id as etcd prints it.
func FormatMemberID(id uint64) string {
	if id == 0 {
		return ""
	}
	return fmt.Sprintf("%x", id)
}
