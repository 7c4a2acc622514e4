package usage

import (
	"fmt"
	"time"

	"github.com/polyvisor/polyvisor/api"
)

// MaxAnswerPoints bounds the points of one answer, over all its series.
const MaxAnswerPoints = 1 << 20

// Answer reads what a usage query asks from a host's store: the
// host's series, or VMs' by UID.
func Answer(st *Store, host string, q *api.UsageQuery) api.UsageAnswer {
	ans := api.UsageAnswer{Series: map[string][]api.UsagePoint{}}
	if q == nil {
		ans.Error = "no usage query"
		return ans
	}
	kind, ids := KindVM, q.UIDs
	if q.Kind == KindHost {
		kind, ids = KindHost, []string{host}
	} else if q.Kind != KindVM {
		ans.Error = fmt.Sprintf("usage query kind %q: host or vm", q.Kind)
		return ans
	}
	total := 0
	for _, id := range ids {
		pts, step, err := st.Query(kind, id, q.Since, q.Until, time.Duration(q.StepSeconds)*time.Second)
		if err != nil {
			ans.Error = err.Error()
			return ans
		}
		if total += len(pts); total > MaxAnswerPoints {
			ans.Error = fmt.Sprintf("more than %d points asked for: ask for a longer step", MaxAnswerPoints)
			ans.Series = nil
			return ans
		}
		ans.StepSeconds = int64(step / time.Second)
		out := make([]api.UsagePoint, len(pts))
		for i, p := range pts {
			out[i] = api.UsagePoint{Time: p.Time, CPU: p.CPU, CPUMax: p.CPUMax, MemoryBytes: int64(p.MemoryBytes), MemoryMaxBytes: int64(p.MemoryMax), Samples: p.Samples}
		}
		ans.Series[id] = out
	}
	return ans
}
