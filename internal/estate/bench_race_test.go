//go:build race

package estate_test

// vcsim's clone tasks race with one another (its own data races, in
// govmomi's simulator package): under the race detector the estates are
// grown one clone at a time.
const benchRace = true
