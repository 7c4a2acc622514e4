package bench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// runConcurrent makes n calls of f (i from 0 to n-1) on conc workers that
// take the next i as they free up. It returns each call's latency, by i,
// and the wall time from the first call's start to the last one's end. The
// first error stops the workers and is returned.
func runConcurrent(ctx context.Context, n, conc int, f func(ctx context.Context, worker, i int) error) ([]time.Duration, time.Duration, error) {
	if n <= 0 {
		return nil, 0, nil
	}
	conc = max(1, min(conc, n))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	lat := make([]time.Duration, n)
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := time.Now()
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t := time.Now()
				err := f(ctx, w, i)
				lat[i] = time.Since(t)
				if err != nil {
					errOnce.Do(func() {
						firstErr = fmt.Errorf("call %d: %w", i, err)
						cancel()
					})
					return
				}
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if firstErr != nil {
		return nil, wall, firstErr
	}
	if err := ctx.Err(); err != nil {
		// ctx ended from outside: some calls were never made.
		return nil, wall, err
	}
	return lat, wall, nil
}
