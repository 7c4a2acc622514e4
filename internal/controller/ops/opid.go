package ops

import (
	"crypto/rand"
	"fmt"
	"sync"
	"time"
)

// opClock hands out operation ids that sort in the order the operations
// were made, so that the store, which lists by key, lists operations
// oldest first on every page.
var opClock struct {
	sync.Mutex
	lastMS int64  // the millisecond of the last id
	seq    uint16 // ids made in that millisecond, 12 bits
}

// NewID returns an operation id and its creation time: a version 7
// UUID, whose first 48 bits are the Unix time in milliseconds and next 12
// a counter within the millisecond, then random bits. Ids made in one
// process are strictly increasing even when the clock steps back.
func NewID() (string, time.Time) {
	opClock.Lock()
	now := time.Now().UTC()
	ms := now.UnixMilli()
	switch {
	case ms > opClock.lastMS:
		opClock.seq = 0
	case opClock.seq < 0xfff:
		ms = opClock.lastMS
		opClock.seq++
	default:
		ms = opClock.lastMS + 1
		opClock.seq = 0
	}
	opClock.lastMS = ms
	seq := opClock.seq
	opClock.Unlock()

	var b [16]byte
	_, _ = rand.Read(b[8:])
	for i := range 6 {
		b[i] = byte(ms >> (8 * (5 - i)))
	}
	b[6] = 0x70 | byte(seq>>8)&0x0f
	b[7] = byte(seq)
	b[8] = b[8]&0x3f | 0x80
	id := fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
	if t := time.UnixMilli(ms).UTC(); t.After(now) {
		now = t // the id's time, when the clock stepped back
	}
	return id, now
}

// IDTime is the time an operation id made by NewID says it was made, to
// the millisecond; false for a string that is not such an id.
func IDTime(id string) (time.Time, bool) {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' || id[14] != '7' {
		return time.Time{}, false
	}
	var ms int64
	for i, c := range id {
		var v byte
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			continue
		case c >= '0' && c <= '9':
			v = byte(c - '0')
		case c >= 'a' && c <= 'f':
			v = byte(c-'a') + 10
		default:
			return time.Time{}, false
		}
		if i < 13 { // the first 48 bits: 12 hex digits around the dash at 8
			ms = ms<<4 | int64(v)
		}
	}
	return time.UnixMilli(ms).UTC(), true
}
