package throttle

import "time"

// An Option configures a Limiter or a Login.
type Option func(*options)

type options struct {
	now     func() time.Time
	maxKeys int
}

// WithClock makes the Limiter or Login take the time from now instead of
// time.Now. now must be safe for concurrent use.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithMaxKeys caps the number of keys tracked at n (DefaultMaxKeys if n <=
// 0). Past the cap, the keys used least recently are forgotten.
func WithMaxKeys(n int) Option {
	return func(o *options) { o.maxKeys = n }
}

func applyOptions(opts []Option) options {
	o := options{now: time.Now, maxKeys: DefaultMaxKeys}
	for _, opt := range opts {
		opt(&o)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.maxKeys <= 0 {
		o.maxKeys = DefaultMaxKeys
	}
	return o
}
