package cluster

import (
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/internal/store"
)

func TestCheckRemoval(t *testing.T) {
	three := []store.Member{{ID: 1}, {ID: 2}, {ID: 3}}
	withLearner := []store.Member{{ID: 1}, {ID: 2, Learner: true}}
	up := func(ids ...uint64) map[uint64]bool {
		m := map[uint64]bool{}
		for _, id := range ids {
			m[id] = true
		}
		return m
	}
	for _, c := range []struct {
		name    string
		members []store.Member
		healthy map[uint64]bool
		remove  uint64
		want    string // "" allows
	}{
		{"a healthy member of three all up", three, up(1, 2, 3), 3, ""},
		{"a dead member of three", three, up(1, 2), 3, ""},
		{"a live member while another is dead", three, up(1, 2), 2, "would lose the store's quorum: of the 2 voting members left, 1 are up and a quorum needs 2"},
		{"a member of three with two dead", three, up(1), 1, "of the 2 voting members left, 0 are up"},
		{"the last voting member", []store.Member{{ID: 1}}, up(1), 1, "last voting member"},
		{"the last voter beside a learner", withLearner, up(1, 2), 1, "last voting member"},
		{"a learner", withLearner, up(1), 2, ""},
		{"a member that is not there", three, up(1, 2, 3), 9, ""},
		{"the dead one of two", []store.Member{{ID: 1}, {ID: 2}}, up(1), 2, ""},
		{"the live one of two", []store.Member{{ID: 1}, {ID: 2}}, up(1), 1, "of the 1 voting members left, 0 are up"},
	} {
		err := CheckRemoval(c.members, c.healthy, c.remove, "sx")
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}
