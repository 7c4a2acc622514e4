package bench

import (
	"math"
	"slices"
	"time"
)

// percentile returns the p-th percentile (0-100) of xs by linear
// interpolation between the two nearest ranks (the "exclusive of nothing"
// definition numpy and most spreadsheets use), so that the 50th percentile
// of an even count is the mean of the middle two. xs need not be sorted and
// is not modified. It returns NaN for an empty slice.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return sortedPercentile(s, p)
}

// sortedPercentile is percentile on an already sorted slice.
func sortedPercentile(s []float64, p float64) float64 {
	if len(s) == 0 {
		return math.NaN()
	}
	p = min(max(p, 0), 100)
	rank := p / 100 * float64(len(s)-1)
	lo := int(math.Floor(rank))
	hi := int(math.Ceil(rank))
	if lo == hi {
		return s[lo]
	}
	frac := rank - float64(lo)
	return s[lo] + (s[hi]-s[lo])*frac
}

// median is the 50th percentile.
func median(xs []float64) float64 { return percentile(xs, 50) }

// Latency summarises a set of latency samples, in milliseconds.
type Latency struct {
	Samples int     `json:"samples"`
	MinMs   float64 `json:"minMs"`
	P50Ms   float64 `json:"p50Ms"`
	P90Ms   float64 `json:"p90Ms"`
	P99Ms   float64 `json:"p99Ms"`
	MaxMs   float64 `json:"maxMs"`
	MeanMs  float64 `json:"meanMs"`
}

// summarize computes a Latency from durations.
func summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	ms := make([]float64, len(ds))
	sum := 0.0
	for i, d := range ds {
		ms[i] = msOf(d)
		sum += ms[i]
	}
	slices.Sort(ms)
	return Latency{
		Samples: len(ms),
		MinMs:   ms[0],
		P50Ms:   sortedPercentile(ms, 50),
		P90Ms:   sortedPercentile(ms, 90),
		P99Ms:   sortedPercentile(ms, 99),
		MaxMs:   ms[len(ms)-1],
		MeanMs:  sum / float64(len(ms)),
	}
}

// msOf converts a duration to fractional milliseconds.
func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// rate is count per second over d (0 for a zero duration).
func rate(count int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(count) / d.Seconds()
}
