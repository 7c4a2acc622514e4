package rvtools

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/xuri/excelize/v2"

	"github.com/polyvisor/polyvisor/internal/rvtools/rvtoolstest"
)

// streamBook writes a workbook whose vHost sheet has the header and then
// rows rows of one cell each, in column col; vInfo has its header only.
// The stream writer writes the cells as given, not spread out.
func streamBook(t *testing.T, rows int, col string) []byte {
	t.Helper()
	f := excelize.NewFile()
	defer f.Close()
	if err := f.SetSheetName("Sheet1", SheetInfo); err != nil {
		t.Fatal(err)
	}
	if err := f.SetSheetRow(SheetInfo, "A1", &rvtoolstest.InfoHeader); err != nil {
		t.Fatal(err)
	}
	if _, err := f.NewSheet(SheetHost); err != nil {
		t.Fatal(err)
	}
	sw, err := f.NewStreamWriter(SheetHost)
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.SetRow("A1", rvtoolstest.HostHeader); err != nil {
		t.Fatal(err)
	}
	for r := 2; r < rows+2; r++ {
		cell, err := excelize.JoinCellName(col, r)
		if err != nil {
			t.Fatal(err)
		}
		if err := sw.SetRow(cell, []any{"x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := sw.Flush(); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := f.Write(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// allocated returns the bytes fn allocates.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestWideRowsAreRefusedUnread: a sheet of rows with one cell each in the
// last column (XFD) would spread to 16,384 cells a row if read whole (400
// such rows, 4 KB zipped, took 454 MiB); the first is refused, naming it,
// and the import allocates a bounded amount.
func TestWideRowsAreRefusedUnread(t *testing.T) {
	wb := streamBook(t, 400, "XFD")
	t.Logf("workbook: %d bytes", len(wb))
	var err error
	n := allocated(func() { _, err = Read(context.Background(), bytes.NewReader(wb), Options{}) })
	t.Logf("allocated %d KiB", n>>10)
	var e *Error
	if !errors.As(err, &e) || e.Sheet != SheetHost || e.Cell != "XFD2" || !strings.Contains(e.Message, "past column 512") {
		t.Fatalf("error %v, want one naming vHost XFD2", err)
	}
	if n > 32<<20 {
		t.Fatalf("refusing the workbook allocated %d MiB", n>>20)
	}
	// A row up to the bound is read.
	if _, err := Read(context.Background(), bytes.NewReader(streamBook(t, 1, "SR")), Options{}); err == nil || errors.As(err, &e) && strings.Contains(e.Message, "past column") {
		t.Fatalf("a row 512 columns wide: %v, want it read (and refused for its empty host name)", err)
	}
}

// TestLongSheetStopsAtMaxRows: reading stops at the first row past the
// bound, which the error names.
func TestLongSheetStopsAtMaxRows(t *testing.T) {
	defer func(n int) { maxRows = n }(maxRows)
	maxRows = 50
	b := goodBook()
	for i := range 100 {
		b[SheetHost] = append(b[SheetHost], hostRow("esx"+strings.Repeat("x", i+4), "False", 2600, 40, 393216))
	}
	_, err := Read(context.Background(), workbook(t, b), Options{})
	var e *Error
	if !errors.As(err, &e) || e.Sheet != SheetHost || e.Cell != "A51" || !strings.Contains(e.Message, "more than 50 rows") {
		t.Fatalf("error %v, want one naming vHost A51", err)
	}
}

// TestUnreferencedCellsAreCountedFirst: cells without a reference each
// take the next column, so excelize would build a row of all of them
// before its width could be seen (a row of two million, 66 KB zipped,
// took 1.3 GiB); they are counted on the raw XML first.
func TestUnreferencedCellsAreCountedFirst(t *testing.T) {
	row := "<row>" + strings.Repeat("<c><v>1</v></c>", 200_000) + "</row>"
	wb := withHostRow(t, row)
	var err error
	n := allocated(func() { _, err = Read(context.Background(), bytes.NewReader(wb), Options{}) })
	t.Logf("workbook %d bytes, allocated %d KiB", len(wb), n>>10)
	var e *Error
	if !errors.As(err, &e) || e.Sheet != SheetHost || e.Cell != "row 2" || !strings.Contains(e.Message, "more than 512 cells") {
		t.Fatalf("error %v, want one naming vHost row 2", err)
	}
	if n > 32<<20 {
		t.Fatalf("refusing the workbook allocated %d MiB", n>>20)
	}
}

// withHostRow returns a workbook whose vHost sheet has the header and then
// row, written as raw XML.
func withHostRow(t *testing.T, row string) []byte {
	t.Helper()
	wb := streamBook(t, 0, "A")
	zr, err := zip.NewReader(bytes.NewReader(wb), int64(len(wb)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	found := false
	for _, zf := range zr.File {
		rc, err := zf.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if zf.Name == "xl/worksheets/sheet2.xml" { // vHost
			i := bytes.Index(b, []byte("</row>")) + len("</row>")
			b = append(b[:i:i], append([]byte(row), b[i:]...)...)
			found = true
		}
		w, err := zw.Create(zf.Name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatal("no vHost part in the workbook")
	}
	return out.Bytes()
}

// TestLongTextsAreRefused: no text of the workbook is longer than Excel
// writes, no cell read longer than a name, and the cells kept of a sheet
// are bounded in all; a shared string read once per cell from a temporary
// file cannot be multiplied by the rows that refer to it.
func TestLongTextsAreRefused(t *testing.T) {
	long := `<row r="2"><c r="B2" t="inlineStr"><is><t>` + strings.Repeat("x", MaxText+1) + `</t></is></c></row>`
	_, err := Read(context.Background(), bytes.NewReader(withHostRow(t, long)), Options{})
	var e *Error
	if !errors.As(err, &e) || e.Sheet != SheetHost || e.Cell != "row 2" || !strings.Contains(e.Message, "a text longer than") {
		t.Fatalf("a text of %d bytes: %v", MaxText+1, err)
	}

	// So is a string of many short runs, which excelize joins.
	runs := `<row r="2"><c r="B2" t="inlineStr"><is>` + strings.Repeat("<r><t>xxxxxxxx</t></r>", MaxText/8+1) + `</is></c></row>`
	_, err = Read(context.Background(), bytes.NewReader(withHostRow(t, runs)), Options{})
	if !errors.As(err, &e) || e.Sheet != SheetHost || e.Cell != "row 2" || !strings.Contains(e.Message, "a text longer than") {
		t.Fatalf("a string of %d runs: %v", MaxText/8+1, err)
	}

	b := goodBook()
	b[SheetHost][1][0] = strings.Repeat("x", MaxCellBytes+1)
	_, err = Read(context.Background(), workbook(t, b), Options{})
	if !errors.As(err, &e) || e.Sheet != SheetHost || e.Cell != "A2" || !strings.Contains(e.Message, "longer than 1024 bytes") {
		t.Fatalf("a host name of %d bytes: %v", MaxCellBytes+1, err)
	}

	defer func(n int) { maxKeptBytes = n }(maxKeptBytes)
	maxKeptBytes = 30
	_, err = Read(context.Background(), workbook(t, goodBook()), Options{})
	if !errors.As(err, &e) || e.Sheet != SheetHost || !strings.Contains(e.Message, "more than 30 bytes in the columns read") {
		t.Fatalf("a sheet over the kept bound: %v", err)
	}
}

// TestReadStopsWithItsContext: a workbook whose request has ended stops
// being read, giving its slot back.
func TestReadStopsWithItsContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Read(ctx, workbook(t, goodBook()), Options{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("reading with an ended context: %v", err)
	}
}

// TestTextReadIsBounded: the text of every cell read counts, kept or not,
// so cells naming one long shared string cannot make the import copy it
// out without end.
func TestTextReadIsBounded(t *testing.T) {
	defer func(n int) { maxTextRead = n }(maxTextRead)
	maxTextRead = 100 << 10
	b := goodBook()
	long := strings.Repeat("x", 30_000)
	for _, row := range b[SheetInfo][1:] {
		if len(row) > 15 {
			row[15] = long // the guest OS: a column the import does not keep
		}
	}
	_, err := Read(context.Background(), workbook(t, b), Options{})
	var e *Error
	if !errors.As(err, &e) || e.Sheet != SheetInfo || !strings.Contains(e.Message, "bytes of text read") {
		t.Fatalf("error %v, want one for vInfo's text", err)
	}
	maxTextRead = 1 << 20
	if _, err := Read(context.Background(), workbook(t, b), Options{}); err != nil {
		t.Fatalf("under the bound: %v", err)
	}
}
