package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// parseMiB reads a size in MiB: "512M", "2G", "1.5G", "1T", "512MiB",
// "2GB"; a bare number is MiB. Units are binary whatever their spelling.
func parseMiB(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	if num == "" {
		return 0, fmt.Errorf("size %q: no number", s)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: bad number", s)
	}
	var mul float64
	switch strings.ToUpper(unit) {
	case "", "M", "MB", "MIB":
		mul = 1
	case "G", "GB", "GIB":
		mul = 1024
	case "T", "TB", "TIB":
		mul = 1024 * 1024
	case "K", "KB", "KIB":
		mul = 1.0 / 1024
	default:
		return 0, fmt.Errorf("size %q: unknown unit %q (use M, G or T)", s, unit)
	}
	mib := v * mul
	if mib != math.Trunc(mib) {
		return 0, fmt.Errorf("size %q is not a whole number of MiB", s)
	}
	if mib <= 0 || mib > math.MaxInt32*1024 {
		return 0, fmt.Errorf("size %q is out of range", s)
	}
	return int64(mib), nil
}

// formatMiB writes a size in MiB the way parseMiB reads it, rounded to a
// tenth past the unit: 512M, 2G, 1.5G, 195.3G.
func formatMiB(mib int64) string {
	switch {
	case mib >= 1024*1024 && mib%(1024*1024) == 0:
		return fmt.Sprintf("%dT", mib/(1024*1024))
	case mib >= 1024:
		return strconv.FormatFloat(math.Round(float64(mib)*10/1024)/10, 'f', -1, 64) + "G"
	default:
		return fmt.Sprintf("%dM", mib)
	}
}

// formatBytes writes a byte count in binary units: 1.4 GiB.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// sizeValue is a flag holding a size in MiB.
type sizeValue struct{ mib *int64 }

func (v sizeValue) String() string {
	if v.mib == nil || *v.mib == 0 {
		return ""
	}
	return formatMiB(*v.mib)
}
func (v sizeValue) Type() string { return "size" }
func (v sizeValue) Set(s string) error {
	n, err := parseMiB(s)
	if err != nil {
		return err
	}
	*v.mib = n
	return nil
}

// sizeListValue is a repeatable flag of sizes in MiB.
type sizeListValue struct{ list *[]int64 }

func (v sizeListValue) String() string {
	if v.list == nil {
		return ""
	}
	parts := make([]string, len(*v.list))
	for i, n := range *v.list {
		parts[i] = formatMiB(n)
	}
	return strings.Join(parts, ",")
}
func (v sizeListValue) Type() string { return "size" }
func (v sizeListValue) Set(s string) error {
	n, err := parseMiB(s)
	if err != nil {
		return err
	}
	*v.list = append(*v.list, n)
	return nil
}

// labelsValue is a repeatable k=v flag.
type labelsValue struct{ m *map[string]string }

func (v labelsValue) String() string {
	if v.m == nil || len(*v.m) == 0 {
		return ""
	}
	return labels(*v.m)
}
func (v labelsValue) Type() string { return "key=value" }
func (v labelsValue) Set(s string) error {
	k, val, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(k) == "" {
		return fmt.Errorf("label %q: want key=value", s)
	}
	if *v.m == nil {
		*v.m = map[string]string{}
	}
	(*v.m)[k] = val
	return nil
}
