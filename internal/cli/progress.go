package cli

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progressBar shows how much of a transfer is done: a bar redrawn in
// place on a terminal, a line every tenth otherwise.
type progressBar struct {
	mu      sync.Mutex
	w       io.Writer
	tty     bool
	label   string
	total   int64
	n       int64
	start   time.Time
	drawn   time.Time
	lastPct int
}

func newProgressBar(w io.Writer, label string, total int64) *progressBar {
	return &progressBar{w: w, tty: isTerminal(w), label: label, total: total, start: time.Now(), lastPct: -1}
}

// set records that n bytes are done. It is safe to call from another
// goroutine than finish.
func (b *progressBar) set(n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.n = n
	if b.tty {
		if time.Since(b.drawn) >= 100*time.Millisecond {
			b.draw()
		}
		return
	}
	if b.total > 0 {
		pct := int(n * 100 / b.total)
		if pct/10 > b.lastPct/10 || b.lastPct < 0 {
			b.lastPct = pct
			fmt.Fprintf(b.w, "%s: %d%% (%s of %s)\n", b.label, pct, formatBytes(n), formatBytes(b.total))
		}
	}
}

// draw redraws the bar on the terminal.
func (b *progressBar) draw() {
	b.drawn = time.Now()
	const width = 30
	pct := 0
	if b.total > 0 {
		pct = int(b.n * 100 / b.total)
	}
	fill := min(width, pct*width/100)
	rate := ""
	if secs := time.Since(b.start).Seconds(); secs > 0.5 {
		rate = "  " + formatBytes(int64(float64(b.n)/secs)) + "/s"
	}
	fmt.Fprintf(b.w, "\r\033[K%s [%s%s] %3d%%  %s / %s%s", b.label,
		strings.Repeat("=", fill), strings.Repeat(" ", width-fill), pct, formatBytes(b.n), formatBytes(b.total), rate)
}

// finish draws the final state and ends the line.
func (b *progressBar) finish(ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.tty {
		if ok && b.lastPct < 100 {
			fmt.Fprintf(b.w, "%s: done (%s)\n", b.label, formatBytes(b.n))
		}
		return
	}
	b.draw()
	fmt.Fprintln(b.w)
}
