//go:build !race

package estate_test

// benchRace tells whether the race detector is on (see bench_race_test.go).
const benchRace = false
