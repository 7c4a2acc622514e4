package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"
	"gopkg.in/yaml.v3"

	"github.com/polyvisor/polyvisor/api"
)

// outputFormat is the value of -o.
type outputFormat string

const (
	outputTable outputFormat = ""
	outputJSON  outputFormat = "json"
	outputYAML  outputFormat = "yaml"
)

func (o *outputFormat) String() string { return string(*o) }
func (o *outputFormat) Type() string   { return "format" }
func (o *outputFormat) Set(s string) error {
	switch s {
	case "table", "":
		*o = outputTable
	case "json":
		*o = outputJSON
	case "yaml":
		*o = outputYAML
	default:
		return fmt.Errorf("unknown output format %q (want table, json or yaml)", s)
	}
	return nil
}

// structured tells whether the output is for scripts (json or yaml).
func (a *app) structured() bool { return a.output != outputTable }

// print writes v as JSON or YAML when asked, and otherwise calls human
// with a tabwriter that is flushed after. What human writes reaches w
// terminal-safe (termSafe); JSON and YAML keep every value exact.
func (a *app) print(w io.Writer, v any, human func(tw *tabwriter.Writer)) error {
	switch a.output {
	case outputJSON:
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return fmt.Errorf("encode output: %w", err)
		}
		_, err = fmt.Fprintf(w, "%s\n", jsonSafe(b))
		return err
	case outputYAML:
		b, err := toYAML(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	tw := tabwriter.NewWriter(termWriter{w}, 0, 4, 2, ' ', 0)
	human(tw)
	return tw.Flush()
}

// toYAML writes v as YAML with the field names and order of its JSON
// form: JSON is YAML, so the JSON is read as a YAML node tree whose styles
// are then reset to YAML's block style.
func toYAML(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode output: %w", err)
	}
	var n yaml.Node
	// YAML takes no DEL or C1 control as it is, even in a string: as
	// JSON escapes they read the same.
	if err := yaml.Unmarshal(jsonSafe(b), &n); err != nil {
		return nil, fmt.Errorf("encode output: %w", err)
	}
	// A string holding a control is double-quoted, where YAML escapes
	// it; what YAML deems printable but a terminal obeys (bidirectional
	// controls) is escaped after.
	var plain func(*yaml.Node)
	plain = func(n *yaml.Node) {
		n.Style = 0
		if n.Kind == yaml.ScalarNode && strings.ContainsFunc(n.Value, func(r rune) bool { return unsafeRune(r) || r == '\t' }) {
			n.Style = yaml.DoubleQuotedStyle
		}
		for _, c := range n.Content {
			plain(c)
		}
	}
	plain(&n)
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, fmt.Errorf("encode output: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode output: %w", err)
	}
	return jsonSafe(buf.Bytes()), nil
}

// isTerminal tells whether a stream of the command is a terminal.
func isTerminal(s any) bool {
	f, ok := s.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// age formats the time since t as 45s, 12m, 5h or 3d.
func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd", int(d.Hours()/24))
	}
}

// when formats a time for details, with its age.
func when(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("%s (%s ago)", t.Local().Format(time.RFC3339), age(t))
}

// orDash returns s, or "-" when it is empty.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// labels formats labels as k=v,k=v in key order.
func labels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// row writes tab-separated cells and a newline. A cell's tabs, newlines
// and controls are escaped: it stays in its column and on its line.
func row(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			fmt.Fprint(w, "\t")
		}
		fmt.Fprint(w, termSafe(fmt.Sprint(c), true))
	}
	fmt.Fprintln(w)
}

// listItems fetches one page when --limit is given, else every page.
func listItems[T any](ctx context.Context, opts api.ListOptions,
	page func(context.Context, api.ListOptions) (*api.List[T], error),
	all func(context.Context, api.ListOptions) ([]T, error)) ([]T, error) {
	if opts.Limit > 0 {
		p, err := page(ctx, opts)
		if err != nil {
			return nil, err
		}
		return p.Items, nil
	}
	return all(ctx, opts)
}

// yesNo writes a flag for people.
func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// outcome is what a command that returns no object prints with -o json
// or yaml.
type outcome struct {
	Kind    string `json:"kind"`
	Name    string `json:"name"`
	Project string `json:"project,omitempty"`
	Result  string `json:"result"`
}

// printOutcome prints an outcome: msg for people, the outcome for scripts.
func (a *app) printOutcome(w io.Writer, o outcome, msg string) error {
	return a.print(w, o, func(tw *tabwriter.Writer) { fmt.Fprintln(tw, msg) })
}
