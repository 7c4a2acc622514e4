package cli

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// What the CLI prints comes from the server, and much of it from other
// people: names, descriptions, messages, audit records' paths, providers'
// inventories, hosts' reports, guests' serial output. A string holding
// ESC, another C0 or C1 control, or a bidirectional override would drive
// the terminal of whoever reads it (move the cursor, rewrite lines, set
// the title, hide text). Everything the CLI prints for people goes through
// termSafe; JSON and YAML output stays exact, with such characters written
// as escapes of those formats.

// unsafeRune tells whether r must not reach a terminal as it is: C0
// controls but tab and newline, DEL, C1 controls, the line and paragraph
// separators and the bidirectional controls.
func unsafeRune(r rune) bool {
	switch {
	case r < 0x20:
		return r != '\t' && r != '\n'
	case r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true // bidirectional marks, embeddings, overrides and isolates
	case r == 0x2028, r == 0x2029:
		return true
	}
	return false
}

// termSafe returns s with every character that would drive a terminal
// written as a visible escape (\x1b, \r, \u202e; a byte that is not UTF-8
// as \xff); printable text, tabs and newlines are kept. With oneLine, tabs
// and newlines are escaped too, for a value that must stay on its line
// and in its column.
func termSafe(s string, oneLine bool) string {
	clean := true
	for i, r := range s {
		if unsafeRune(r) || oneLine && (r == '\t' || r == '\n') || r == utf8.RuneError && isBadByte(s, i) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\t' && oneLine:
			b.WriteString(`\t`)
		case r == '\n' && oneLine:
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r < 0x80 && unsafeRune(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// isBadByte tells whether the RuneError at s[i] stands for a byte that is
// not UTF-8 (rather than U+FFFD written out).
func isBadByte(s string, i int) bool {
	_, size := utf8.DecodeRuneInString(s[i:])
	return size <= 1
}

// termWriter passes what is written to it through termSafe (tabs and
// newlines kept). A character split across two writes is escaped byte by
// byte: callers write whole strings.
type termWriter struct{ w io.Writer }

func (t termWriter) Write(p []byte) (int, error) {
	if _, err := io.WriteString(t.w, termSafe(string(p), false)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// jsonSafe rewrites JSON so that the characters unsafeRune names, which
// encoding/json leaves as they are (DEL, C1 controls, bidirectional
// controls), are \u escapes: the same JSON value, safe on a terminal.
// They can only be inside strings, where the escape means the same.
func jsonSafe(b []byte) []byte {
	if !bytes.ContainsFunc(b, func(r rune) bool { return unsafeRune(r) && r != '\r' && r >= 0x20 }) {
		return b
	}
	var out bytes.Buffer
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r >= 0x20 && unsafeRune(r) {
			fmt.Fprintf(&out, `\u%04x`, r)
		} else {
			out.Write(b[i : i+size])
		}
		i += size
	}
	return out.Bytes()
}

// jsonSafeWriter is jsonSafe for a stream of JSON (an export): it holds
// back a character split across writes until Close.
type jsonSafeWriter struct {
	w    io.Writer
	held []byte
}

func (j *jsonSafeWriter) Write(p []byte) (int, error) {
	buf := append(j.held, p...)
	// Keep an incomplete UTF-8 sequence at the end for the next write.
	cut := len(buf)
	for k := 1; k <= utf8.UTFMax && k <= len(buf); k++ {
		if utf8.RuneStart(buf[len(buf)-k]) {
			if !utf8.FullRune(buf[len(buf)-k:]) {
				cut = len(buf) - k
			}
			break
		}
	}
	j.held = append([]byte(nil), buf[cut:]...)
	if _, err := j.w.Write(jsonSafe(buf[:cut])); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close writes what was held back.
func (j *jsonSafeWriter) Close() error {
	if len(j.held) == 0 {
		return nil
	}
	_, err := j.w.Write(jsonSafe(j.held))
	j.held = nil
	return err
}

// consoleSafe is a guest's serial output made safe to print on a
// terminal: its CRLF line ends become newlines, every other control is
// escaped.
func consoleSafe(b []byte) string {
	return termSafe(strings.ReplaceAll(string(b), "\r\n", "\n"), false)
}
