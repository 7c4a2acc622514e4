// Package rvtools reads an RVTools export of a vSphere estate (its vInfo,
// vCPU, vMemory and vHost sheets) into a planner snapshot, so the estate
// can be sized before anything of it is moved.
package rvtools

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/xuri/excelize/v2"

	"github.com/polyvisor/polyvisor/internal/planner"
)

// Limits on a workbook, which may come from anyone allowed to plan.
const (
	// MaxUnzippedBytes bounds the workbook once unzipped (a zip bomb is
	// refused, not expanded).
	MaxUnzippedBytes = 512 << 20
	maxSheetInMemory = 64 << 20
	// MaxRows bounds each sheet; reading stops there.
	MaxRows = 1_000_000
	// MaxColumns bounds each row: a row reaching past it is refused
	// before the next is read. RVTools writes fewer than 300 columns.
	MaxColumns = 512
	// MaxCellBytes bounds a cell of the columns read: names, states and
	// numbers. MaxText bounds any text of the workbook, above the longest
	// cell Excel writes (32,767 characters), so no shared string can be
	// copied out at a size of the attacker's choosing.
	MaxCellBytes = 1 << 10
	MaxText      = 128 << 10
	// MaxKeptBytes bounds the cells kept of one sheet in all.
	MaxKeptBytes = 128 << 20
	// MaxTextRead bounds the text of all cells read, kept or not: a
	// 20-byte cell may name a shared string of up to MaxText, which
	// excelize copies out for every cell that names it (rich text, or
	// shared strings unzipped to a temporary file).
	MaxTextRead = 2 << 30
)

// maxRows, maxKeptBytes and maxTextRead are MaxRows, MaxKeptBytes and
// MaxTextRead, lowered by tests.
var maxRows, maxKeptBytes, maxTextRead = MaxRows, MaxKeptBytes, MaxTextRead

// Sheets RVTools writes that the import reads.
const (
	SheetInfo   = "vInfo"
	SheetCPU    = "vCPU"
	SheetMemory = "vMemory"
	SheetHost   = "vHost"
)

// Error is a workbook the import refuses, naming the sheet and, where one
// is to blame, the cell.
type Error struct {
	Sheet   string
	Cell    string // "" when the sheet as a whole is wrong
	Message string
}

func (e *Error) Error() string {
	if e.Cell == "" {
		return fmt.Sprintf("sheet %s: %s", e.Sheet, e.Message)
	}
	return fmt.Sprintf("sheet %s, cell %s: %s", e.Sheet, e.Cell, e.Message)
}

// Import is an estate read from a workbook.
type Import struct {
	Snapshot planner.Snapshot `json:"snapshot"`
	// Templates and PoweredOff count the VMs left out: templates never
	// run, and powered-off VMs use nothing now.
	Templates  int `json:"templates"`
	PoweredOff int `json:"poweredOff"`
	// Warnings say what the import made of cells it could not use.
	Warnings []string `json:"warnings,omitempty"`

	textRead int // of all cells read, against maxTextRead
}

// Options tune an import.
type Options struct {
	// IncludePoweredOff plans powered-off VMs too, at their allocation.
	IncludePoweredOff bool
}

// Read reads an RVTools workbook. vInfo and vHost are required; vCPU and
// vMemory, when present, give each VM's current CPU and memory demand
// (vCPU's Overall MHz over its host's core speed; vMemory's Consumed).
// Reading stops when ctx ends.
func Read(ctx context.Context, r io.Reader, opts Options) (*Import, error) {
	raw, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading the workbook: %w", err)
	}
	f, err := excelize.OpenReader(bytes.NewReader(raw), excelize.Options{
		// Sheets larger than maxSheetInMemory are unzipped to a
		// temporary file rather than memory.
		RawCellValue: true, UnzipSizeLimit: MaxUnzippedBytes, UnzipXMLSizeLimit: maxSheetInMemory,
	})
	if err != nil {
		return nil, fmt.Errorf("opening the workbook: %w", err)
	}
	defer f.Close()
	if err := scanWorkbook(ctx, f, raw); err != nil {
		return nil, err
	}
	imp := &Import{}
	hosts, err := readHosts(ctx, f, imp)
	if err != nil {
		return nil, err
	}
	cpu, err := readDemand(ctx, f, SheetCPU, []string{"Overall", "Overall MHz"}, mhzUnits, imp)
	if err != nil {
		return nil, err
	}
	mem, err := readDemand(ctx, f, SheetMemory, []string{"Consumed", "Consumed MiB", "Consumed MB"}, mibUnits, imp)
	if err != nil {
		return nil, err
	}
	if err := readVMs(ctx, f, hosts, cpu, mem, opts, imp); err != nil {
		return nil, err
	}
	return imp, nil
}

// table is a sheet read one row at a time: its header, then only the
// cells of the columns the import asked for, so a wide or long sheet never
// sits in memory whole.
type table struct {
	sheet  string
	it     *excelize.Rows
	cols   map[string]int // header name, lower case -> column
	keep   map[int]int    // column -> its slot in each kept row
	rows   [][]string     // the kept cells of each row after the header
	rowNum []int          // each kept row's number in the sheet
	// keptBytes is the size of the cells kept; textRead, shared by the
	// sheets of a workbook, that of all cells read.
	keptBytes int
	textRead  *int
}

// openTable reads a sheet's header row; load reads the rest.
func openTable(f *excelize.File, sheet string, required bool, textRead *int) (*table, error) {
	idx, err := f.GetSheetIndex(sheet)
	if err != nil || idx < 0 {
		if !required {
			return nil, nil
		}
		return nil, &Error{Sheet: sheet, Message: "the sheet is missing: is this an RVTools export?"}
	}
	it, err := f.Rows(sheet)
	if err != nil {
		return nil, &Error{Sheet: sheet, Message: "reading the sheet: " + err.Error()}
	}
	t := &table{sheet: sheet, it: it, cols: map[string]int{}, keep: map[int]int{}, textRead: textRead}
	if !it.Next() {
		t.close()
		if err := it.Error(); err != nil {
			return nil, &Error{Sheet: sheet, Message: "reading the sheet: " + err.Error()}
		}
		return nil, &Error{Sheet: sheet, Cell: "A1", Message: "the sheet has no header row"}
	}
	header, err := t.next(1)
	if err != nil {
		t.close()
		return nil, err
	}
	for i, name := range header {
		key := strings.ToLower(strings.TrimSpace(name))
		if _, dup := t.cols[key]; !dup && key != "" {
			t.cols[key] = i
		}
	}
	return t, nil
}

// close gives back what the sheet's reader holds; it may be called twice.
func (t *table) close() {
	if t != nil && t.it != nil {
		t.it.Close()
	}
}

// next reads the cells of the row the reader is on, refusing one wider
// than MaxColumns: excelize spreads a row out to its last cell, so that
// last cell, not the number of cells, is what is bounded.
func (t *table) next(num int) ([]string, error) {
	row, err := t.it.Columns(excelize.Options{RawCellValue: true})
	if err != nil {
		return nil, &Error{Sheet: t.sheet, Cell: fmt.Sprintf("row %d", num), Message: "reading the row: " + err.Error()}
	}
	if len(row) > MaxColumns {
		cell, err := excelize.CoordinatesToCellName(len(row), num)
		if err != nil {
			cell = fmt.Sprintf("row %d", num)
		}
		return nil, &Error{Sheet: t.sheet, Cell: cell, Message: fmt.Sprintf("a cell past column %d: an RVTools sheet is narrower", MaxColumns)}
	}
	for _, v := range row {
		*t.textRead += len(v)
	}
	if *t.textRead > maxTextRead {
		return nil, &Error{Sheet: t.sheet, Cell: fmt.Sprintf("row %d", num), Message: fmt.Sprintf("more than %d bytes of text read from the workbook", maxTextRead)}
	}
	return row, nil
}

// load reads the rows after the header, keeping the cells of the columns
// col found, and stops at MaxRows or when ctx ends.
func (t *table) load(ctx context.Context) error {
	defer t.close()
	for num := 2; t.it.Next(); num++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reading sheet %s: %w", t.sheet, err)
		}
		if num > maxRows {
			return &Error{Sheet: t.sheet, Cell: fmt.Sprintf("A%d", num), Message: fmt.Sprintf("more than %d rows", maxRows)}
		}
		row, err := t.next(num)
		if err != nil {
			return err
		}
		kept := make([]string, len(t.keep))
		empty := true
		for c, slot := range t.keep {
			if c >= len(row) {
				continue
			}
			v := strings.TrimSpace(row[c])
			if len(v) > MaxCellBytes {
				cell, _ := excelize.CoordinatesToCellName(c+1, num)
				return &Error{Sheet: t.sheet, Cell: cell, Message: fmt.Sprintf("longer than %d bytes", MaxCellBytes)}
			}
			if t.keptBytes += len(v); t.keptBytes > maxKeptBytes {
				cell, _ := excelize.CoordinatesToCellName(c+1, num)
				return &Error{Sheet: t.sheet, Cell: cell, Message: fmt.Sprintf("more than %d bytes in the columns read", maxKeptBytes)}
			}
			kept[slot], empty = v, empty && v == ""
		}
		if empty {
			continue
		}
		t.rows = append(t.rows, kept)
		t.rowNum = append(t.rowNum, num)
	}
	if err := t.it.Error(); err != nil {
		return &Error{Sheet: t.sheet, Message: "reading the sheet: " + err.Error()}
	}
	return nil
}

// col finds the first of names in the header and keeps its cells; when
// none is there and the column is required, the error names the header row.
func (t *table) col(required bool, names ...string) (int, error) {
	for _, n := range names {
		if i, ok := t.cols[strings.ToLower(n)]; ok {
			if _, kept := t.keep[i]; !kept {
				t.keep[i] = len(t.keep)
			}
			return i, nil
		}
	}
	if !required {
		return -1, nil
	}
	return -1, &Error{Sheet: t.sheet, Cell: "row 1", Message: fmt.Sprintf("no column %q in the header", names[0])}
}

// cell returns the text of kept row r in column c.
func (t *table) cell(r, c int) string {
	slot, ok := t.keep[c]
	if !ok {
		return ""
	}
	return t.rows[r][slot]
}

func (t *table) name(r, c int) string {
	n, err := excelize.CoordinatesToCellName(c+1, t.rowNum[r])
	if err != nil {
		return fmt.Sprintf("row %d", t.rowNum[r])
	}
	return n
}

// number reads a quantity in unit; empty cells give ok=false.
func (t *table) number(r, c int, units map[string]float64, what string) (v float64, ok bool, err error) {
	s := t.cell(r, c)
	if s == "" {
		return 0, false, nil
	}
	v, err = parseQuantity(s, units)
	if err != nil {
		return 0, false, &Error{Sheet: t.sheet, Cell: t.name(r, c), Message: fmt.Sprintf("%s: %v", what, err)}
	}
	return v, true, nil
}

type hostInfo struct {
	mhz float64 // one core's speed
}

func readHosts(ctx context.Context, f *excelize.File, imp *Import) (map[string]hostInfo, error) {
	t, err := openTable(f, SheetHost, true, &imp.textRead)
	if err != nil {
		return nil, err
	}
	defer t.close()
	cName, err := t.col(true, "Host")
	if err != nil {
		return nil, err
	}
	cCores, err := t.col(true, "# Cores", "Cores")
	if err != nil {
		return nil, err
	}
	cMem, err := t.col(true, "# Memory", "Memory", "# Memory MiB", "# Memory MB")
	if err != nil {
		return nil, err
	}
	cCluster, _ := t.col(false, "Cluster")
	cSpeed, _ := t.col(false, "Speed", "Speed MHz")
	cMaint, _ := t.col(false, "in Maintenance Mode", "Maintenance Mode")
	if err := t.load(ctx); err != nil {
		return nil, err
	}
	hosts := map[string]hostInfo{}
	cells := map[string]string{}
	for r := range t.rows {
		name := t.cell(r, cName)
		if name == "" {
			return nil, &Error{Sheet: t.sheet, Cell: t.name(r, cName), Message: "a host row without a host name"}
		}
		if prev, dup := cells[name]; dup {
			return nil, &Error{Sheet: t.sheet, Cell: t.name(r, cName), Message: fmt.Sprintf("host %q appears twice (first at %s)", name, prev)}
		}
		cells[name] = t.name(r, cName)
		cores, ok, err := t.number(r, cCores, countUnits, "# Cores")
		if err != nil {
			return nil, err
		}
		if !ok || cores <= 0 {
			return nil, &Error{Sheet: t.sheet, Cell: t.name(r, cCores), Message: fmt.Sprintf("host %q has no core count", name)}
		}
		memMiB, ok, err := t.number(r, cMem, mibUnits, "# Memory")
		if err != nil {
			return nil, err
		}
		if !ok || memMiB <= 0 {
			return nil, &Error{Sheet: t.sheet, Cell: t.name(r, cMem), Message: fmt.Sprintf("host %q has no memory size", name)}
		}
		mhz, _, err := t.number(r, cSpeed, mhzUnits, "Speed")
		if err != nil {
			return nil, err
		}
		maint, err := t.boolean(r, cMaint)
		if err != nil {
			return nil, err
		}
		hosts[name] = hostInfo{mhz: mhz}
		imp.Snapshot.Hosts = append(imp.Snapshot.Hosts, planner.Host{
			Name: name, Cluster: t.cell(r, cCluster), CPUs: cores, MemoryMiB: memMiB, Cordoned: maint,
		})
	}
	if len(hosts) == 0 {
		return nil, &Error{Sheet: t.sheet, Cell: "A2", Message: "no hosts"}
	}
	return hosts, nil
}

// readDemand reads one demand column of vCPU or vMemory by VM name.
func readDemand(ctx context.Context, f *excelize.File, sheet string, names []string, units map[string]float64, imp *Import) (map[string]float64, error) {
	t, err := openTable(f, sheet, false, &imp.textRead)
	defer t.close()
	if err != nil || t == nil {
		if t == nil && err == nil {
			imp.Warnings = append(imp.Warnings, "no "+sheet+" sheet: VMs are sized by their allocation")
		}
		return nil, err
	}
	cVM, err := t.col(true, "VM")
	if err != nil {
		return nil, err
	}
	c, err := t.col(false, names...)
	if err != nil {
		return nil, err
	}
	if c < 0 {
		imp.Warnings = append(imp.Warnings, fmt.Sprintf("sheet %s has no %q column: VMs are sized by their allocation", sheet, names[0]))
		return nil, nil
	}
	if err := t.load(ctx); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for r := range t.rows {
		vm := t.cell(r, cVM)
		if vm == "" {
			continue
		}
		v, ok, err := t.number(r, c, units, names[0])
		if err != nil {
			return nil, err
		}
		if ok {
			out[vm] = v
		}
	}
	return out, nil
}

func readVMs(ctx context.Context, f *excelize.File, hosts map[string]hostInfo, cpu, mem map[string]float64, opts Options, imp *Import) error {
	t, err := openTable(f, SheetInfo, true, &imp.textRead)
	if err != nil {
		return err
	}
	defer t.close()
	cVM, err := t.col(true, "VM")
	if err != nil {
		return err
	}
	cCPUs, err := t.col(true, "CPUs")
	if err != nil {
		return err
	}
	cMem, err := t.col(true, "Memory", "Memory MiB", "Memory MB")
	if err != nil {
		return err
	}
	cHost, err := t.col(true, "Host")
	if err != nil {
		return err
	}
	cPower, _ := t.col(false, "Powerstate")
	cTemplate, _ := t.col(false, "Template")
	if err := t.load(ctx); err != nil {
		return err
	}
	seen := map[string]string{}
	noHost := 0
	for r := range t.rows {
		name := t.cell(r, cVM)
		if name == "" {
			return &Error{Sheet: t.sheet, Cell: t.name(r, cVM), Message: "a VM row without a VM name"}
		}
		tmpl, err := t.boolean(r, cTemplate)
		if err != nil {
			return err
		}
		if tmpl {
			imp.Templates++
			continue
		}
		if prev, dup := seen[name]; dup {
			return &Error{Sheet: t.sheet, Cell: t.name(r, cVM), Message: fmt.Sprintf("VM %q appears twice (first at %s)", name, prev)}
		}
		seen[name] = t.name(r, cVM)
		on := !strings.EqualFold(t.cell(r, cPower), "poweredOff")
		if !on && !opts.IncludePoweredOff {
			imp.PoweredOff++
			continue
		}
		vcpus, ok, err := t.number(r, cCPUs, countUnits, "CPUs")
		if err != nil {
			return err
		}
		if !ok {
			return &Error{Sheet: t.sheet, Cell: t.name(r, cCPUs), Message: fmt.Sprintf("VM %q has no CPU count", name)}
		}
		memMiB, ok, err := t.number(r, cMem, mibUnits, "Memory")
		if err != nil {
			return err
		}
		if !ok {
			return &Error{Sheet: t.sheet, Cell: t.name(r, cMem), Message: fmt.Sprintf("VM %q has no memory size", name)}
		}
		v := planner.VM{Name: name, Host: t.cell(r, cHost), VCPUs: vcpus, MemoryMiB: memMiB}
		h, known := hosts[v.Host]
		if !known {
			noHost++
			v.Host = ""
		}
		if on {
			var d planner.Usage
			if mhz, ok := cpu[name]; ok && mhz > 0 && known && h.mhz > 0 {
				d.CPU = mhz / h.mhz
			}
			if m, ok := mem[name]; ok && m > 0 {
				d.MemoryMiB = m
			}
			if d.CPU > 0 || d.MemoryMiB > 0 {
				v.Demand = &d
			}
		}
		imp.Snapshot.VMs = append(imp.Snapshot.VMs, v)
	}
	if noHost > 0 {
		imp.Warnings = append(imp.Warnings, fmt.Sprintf("%d VMs name a host missing from vHost: they are planned as not placed", noHost))
	}
	return nil
}

func (t *table) boolean(r, c int) (bool, error) {
	switch strings.ToLower(t.cell(r, c)) {
	case "", "false", "no", "0":
		return false, nil
	case "true", "yes", "1":
		return true, nil
	}
	return false, &Error{Sheet: t.sheet, Cell: t.name(r, c), Message: fmt.Sprintf("%q is not true or false", t.cell(r, c))}
}

var errNotNumber = errors.New("not a number")
