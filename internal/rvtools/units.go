package rvtools

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
)

// Units a cell may carry, as multipliers to the column's unit. RVTools
// writes bare numbers (MiB, MHz) but exports pass through other hands:
// "8 GB", "2.6 GHz", "4,096" and "1.024,5" all turn up.
var (
	mibUnits = map[string]float64{
		"": 1, "mb": 1, "mib": 1, "m": 1,
		"kb": 1.0 / 1024, "kib": 1.0 / 1024,
		"gb": 1024, "gib": 1024, "g": 1024,
		"tb": 1 << 20, "tib": 1 << 20, "t": 1 << 20,
	}
	mhzUnits   = map[string]float64{"": 1, "mhz": 1, "ghz": 1000, "khz": 0.001}
	countUnits = map[string]float64{"": 1}
)

var quantityRE = regexp.MustCompile(`^([+-]?[0-9][0-9.,' \x{00a0}]*)\s*([a-zA-Z]*)$`)

// parseQuantity reads "4096", "4,096", "4.096,5", "8 GB" or "2.6GHz" into
// the column's unit.
func parseQuantity(s string, units map[string]float64) (float64, error) {
	m := quantityRE.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	mult, ok := units[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q", s, m[2])
	}
	num := strings.NewReplacer(" ", "", "\u00a0", "", "'", "").Replace(m[1])
	num, err := normalizeSeparators(num)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if v < 0 {
		return 0, fmt.Errorf("%q is negative", s)
	}
	return v * mult, nil
}

var thousandsRE = regexp.MustCompile(`^[0-9]{1,3}([.,][0-9]{3})+$`)

// normalizeSeparators turns a number with thousands separators and a
// decimal point or comma into Go's syntax.
func normalizeSeparators(s string) (string, error) {
	dot, comma := strings.LastIndex(s, "."), strings.LastIndex(s, ",")
	switch {
	case dot >= 0 && comma >= 0:
		// The last separator is the decimal one.
		if dot > comma {
			return strings.ReplaceAll(s, ",", ""), nil
		}
		return strings.ReplaceAll(strings.ReplaceAll(s, ".", ""), ",", "."), nil
	case comma >= 0:
		if thousandsRE.MatchString(s) {
			return strings.ReplaceAll(s, ",", ""), nil
		}
		if strings.Count(s, ",") > 1 {
			return "", errNotNumber
		}
		return strings.Replace(s, ",", ".", 1), nil
	case strings.Count(s, ".") > 1:
		if thousandsRE.MatchString(s) {
			return strings.ReplaceAll(s, ".", ""), nil
		}
		return "", errNotNumber
	}
	return s, nil
}
