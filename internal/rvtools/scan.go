package rvtools

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/xuri/excelize/v2"
)

// scanWorkbook is a first pass over the raw XML of every part of the
// workbook, keeping nothing, that refuses what excelize would build large
// from little before the import could see it: a row of more than
// MaxColumns cells (cells without a reference each take the next column,
// with no end; the import bounds referenced ones itself), and a text or
// string longer than MaxText. Every part is scanned, not only the sheets
// the import reads, so no mapping of sheet names to parts can send
// excelize to an unscanned one; a part that is not XML ends its scan where
// excelize's reading of it would end too.
func scanWorkbook(ctx context.Context, f *excelize.File, raw []byte) error {
	zr, err := zip.NewReader(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		return fmt.Errorf("opening the workbook: %w", err)
	}
	names := sheetParts(zr)
	for _, zf := range zr.File {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("scanning the workbook: %w", err)
		}
		rc, err := zf.Open()
		if err != nil {
			return fmt.Errorf("opening the workbook's part %s: %w", zf.Name, err)
		}
		row, msg := scanPart(ctx, f, io.LimitReader(rc, MaxUnzippedBytes))
		rc.Close()
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("scanning the workbook: %w", err)
		}
		if msg != "" {
			sheet := names[zf.Name]
			if sheet == "" {
				sheet = zf.Name
			}
			e := &Error{Sheet: sheet, Message: msg}
			if row > 0 {
				e.Cell = fmt.Sprintf("row %d", row)
			}
			return e
		}
	}
	return nil
}

// scanPart reads one part's XML as excelize does, and says what is wrong
// with the first row (by its r attribute, else its position) holding more
// than MaxColumns cells, or the first text or string (all its runs)
// longer than MaxText. Cells are
// counted from one row's start to the next's, as excelize gathers them.
func scanPart(ctx context.Context, f *excelize.File, r io.Reader) (row int, msg string) {
	dec := xml.NewDecoder(r)
	dec.CharsetReader = f.CharsetReader
	cells := 0
	// A string (si, shared; is, inline) is the text of all its runs,
	// which excelize joins each time a cell names it.
	inString, text := 0, 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return 0, ""
		}
		switch t := tok.(type) {
		case xml.CharData:
			if len(t) > MaxText || inString > 0 && text+len(t) > MaxText {
				return row, fmt.Sprintf("a text longer than %d bytes: no cell of Excel's is", MaxText)
			}
			if inString > 0 {
				text += len(t)
			}
		case xml.EndElement:
			if (t.Name.Local == "si" || t.Name.Local == "is") && inString > 0 {
				inString--
			}
		case xml.StartElement:
			switch t.Name.Local {
			case "si", "is":
				if inString == 0 {
					text = 0
				}
				inString++
			case "row":
				if ctx.Err() != nil {
					return 0, "" // scanWorkbook says why
				}
				row++
				for _, a := range t.Attr {
					if a.Name.Local == "r" {
						fmt.Sscan(a.Value, &row)
					}
				}
				cells = 0
			case "c":
				if cells++; cells > MaxColumns {
					return row, fmt.Sprintf("more than %d cells in a row: an RVTools sheet is narrower", MaxColumns)
				}
			}
		}
	}
}

// sheetParts maps the workbook's parts to the names of the sheets they
// hold, to name a sheet in an error; a name it cannot find is the part's.
func sheetParts(zr *zip.Reader) map[string]string {
	var book struct {
		Sheets []struct {
			Name string `xml:"name,attr"`
			ID   string `xml:"http://schemas.openxmlformats.org/officeDocument/2006/relationships id,attr"`
		} `xml:"sheets>sheet"`
	}
	var rels struct {
		Rels []struct {
			ID     string `xml:"Id,attr"`
			Target string `xml:"Target,attr"`
		} `xml:"Relationship"`
	}
	out := map[string]string{}
	if decodePart(zr, "xl/workbook.xml", &book) != nil || decodePart(zr, "xl/_rels/workbook.xml.rels", &rels) != nil {
		return out
	}
	targets := map[string]string{}
	for _, r := range rels.Rels {
		t := r.Target
		if strings.HasPrefix(t, "/") {
			t = strings.TrimPrefix(t, "/")
		} else {
			t = path.Join("xl", t)
		}
		targets[r.ID] = t
	}
	for _, s := range book.Sheets {
		if t, ok := targets[s.ID]; ok {
			out[t] = s.Name
		}
	}
	return out
}

// decodePart decodes a small part of the workbook.
func decodePart(zr *zip.Reader, name string, v any) error {
	rc, err := zr.Open(name)
	if err != nil {
		return err
	}
	defer rc.Close()
	return xml.NewDecoder(io.LimitReader(rc, maxSheetInMemory)).Decode(v)
}
