// Package labels validates object labels and parses and matches label
// selectors ("tier=web,env!=prod,owner,!legacy").
package labels

import (
	"fmt"
	"regexp"
	"strings"
)

var (
	keyRE   = regexp.MustCompile(`^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$`)
	valueRE = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$`)
)

// MaxLabels bounds the labels one object may carry.
const MaxLabels = 64

// Validate checks label keys and values and returns the offending key.
func Validate(m map[string]string) (badKey string, err error) {
	if len(m) > MaxLabels {
		return "", fmt.Errorf("at most %d labels are allowed, not %d", MaxLabels, len(m))
	}
	for k, v := range m {
		if len(k) > 253 || !keyRE.MatchString(k) {
			return k, fmt.Errorf("label key %q is not valid (letters, digits, '-', '_', '.', optional DNS prefix and '/')", k)
		}
		if !valueRE.MatchString(v) {
			return k, fmt.Errorf("label value %q of %q is not valid (up to 63 letters, digits, '-', '_', '.')", v, k)
		}
	}
	return "", nil
}

type op int

const (
	opEq op = iota
	opNotEq
	opExists
	opNotExists
)

type requirement struct {
	key, value string
	op         op
}

// Selector is a parsed label selector; the zero value matches everything.
type Selector struct {
	reqs []requirement
}

// Parse parses a comma-separated selector: k=v, k==v, k!=v, k, !k.
func Parse(s string) (Selector, error) {
	var sel Selector
	if strings.TrimSpace(s) == "" {
		return sel, nil
	}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		var r requirement
		switch {
		case part == "":
			return sel, fmt.Errorf("empty requirement in selector %q", s)
		case strings.Contains(part, "!="):
			k, v, _ := strings.Cut(part, "!=")
			r = requirement{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: opNotEq}
		case strings.Contains(part, "=="):
			k, v, _ := strings.Cut(part, "==")
			r = requirement{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: opEq}
		case strings.Contains(part, "="):
			k, v, _ := strings.Cut(part, "=")
			r = requirement{key: strings.TrimSpace(k), value: strings.TrimSpace(v), op: opEq}
		case strings.HasPrefix(part, "!"):
			r = requirement{key: strings.TrimSpace(part[1:]), op: opNotExists}
		default:
			r = requirement{key: part, op: opExists}
		}
		if !keyRE.MatchString(r.key) {
			return sel, fmt.Errorf("selector key %q is not a valid label key", r.key)
		}
		if !valueRE.MatchString(r.value) {
			return sel, fmt.Errorf("selector value %q is not a valid label value", r.value)
		}
		sel.reqs = append(sel.reqs, r)
	}
	return sel, nil
}

// Empty tells whether the selector matches everything.
func (s Selector) Empty() bool { return len(s.reqs) == 0 }

// Matches tells whether the labels satisfy every requirement.
func (s Selector) Matches(m map[string]string) bool {
	for _, r := range s.reqs {
		v, ok := m[r.key]
		switch r.op {
		case opEq:
			if !ok || v != r.value {
				return false
			}
		case opNotEq:
			if ok && v == r.value {
				return false
			}
		case opExists:
			if !ok {
				return false
			}
		case opNotExists:
			if ok {
				return false
			}
		}
	}
	return true
}
