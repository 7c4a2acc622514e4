// Package rvtoolstest writes workbooks in RVTools' layout for tests.
package rvtoolstest

import (
	"bytes"
	"fmt"

	"github.com/xuri/excelize/v2"
)

// Book is a workbook: rows by sheet name, the header first.
type Book map[string][][]any

// RVTools' sheet order; sheets not in it come after, by name order given.
var order = []string{"vInfo", "vCPU", "vMemory", "vDisk", "vHost"}

// Columns of RVTools 4.x, trimmed to a realistic prefix.
var (
	InfoHeader = []any{"VM", "Powerstate", "Template", "SRM Placeholder", "Config status", "DNS Name", "CPUs", "Memory", "NICs", "Disks", "Provisioned MiB", "In Use MiB", "Datacenter", "Cluster", "Host", "OS according to the configuration file", "VM ID", "VI SDK Server"}
	CPUHeader  = []any{"VM", "Powerstate", "Template", "CPUs", "Sockets", "Cores p/s", "Max", "Overall", "Level", "Shares", "Reservation", "Entitlement", "DRS Entitlement", "Limit", "Hot Add", "Hot Remove", "Datacenter", "Cluster", "Host"}
	MemHeader  = []any{"VM", "Powerstate", "Template", "Size MiB", "Memory Reservation Locked To Max", "Overhead", "Max", "Consumed", "Consumed Overhead", "Private", "Shared", "Swapped", "Ballooned", "Active", "Entitlement", "DRS Entitlement", "Datacenter", "Cluster", "Host"}
	HostHeader = []any{"Host", "Datacenter", "Cluster", "Config status", "in Maintenance Mode", "CPU Model", "Speed", "HT Available", "HT Active", "# CPU", "Cores per CPU", "# Cores", "CPU usage %", "# Memory", "Memory usage %", "# NICs", "# VMs total", "# vCPUs"}
)

// Info is a vInfo row.
func Info(vm, power, template string, cpus, mem any, host string) []any {
	return []any{vm, power, template, "False", "green", vm + ".corp", cpus, mem, 1, 1, 40960, 20480, "dc1", "prod", host, "Ubuntu Linux (64-bit)", "vm-1", "vc.corp"}
}

// CPU is a vCPU row with its Overall MHz.
func CPU(vm string, overall any) []any {
	return []any{vm, "poweredOn", "False", 4, 2, 2, 10400, overall, "normal", 4000, 0, 0, 0, -1, "False", "False", "dc1", "prod", "esx1"}
}

// Memory is a vMemory row with its Consumed MiB.
func Memory(vm string, consumed any) []any {
	return []any{vm, "poweredOn", "False", 8192, "False", 60, 8192, consumed, 60, 3000, 100, 0, 0, 800, 2000, 2000, "dc1", "prod", "esx1"}
}

// Host is a vHost row.
func Host(name, cluster, maintenance string, speed, cores, mem any) []any {
	return []any{name, "dc1", cluster, "green", maintenance, "Intel(R) Xeon(R) Gold 6248", speed, "True", "True", 2, 20, cores, 30, mem, 45, 4, 10, 40}
}

// Bytes writes the book as an .xlsx workbook.
func (b Book) Bytes() ([]byte, error) {
	f := excelize.NewFile()
	defer f.Close()
	first := true
	for _, sheet := range order {
		rows, ok := b[sheet]
		if !ok {
			continue
		}
		if first {
			if err := f.SetSheetName("Sheet1", sheet); err != nil {
				return nil, fmt.Errorf("naming sheet %s: %w", sheet, err)
			}
			first = false
		} else if _, err := f.NewSheet(sheet); err != nil {
			return nil, fmt.Errorf("adding sheet %s: %w", sheet, err)
		}
		for i, row := range rows {
			cell, err := excelize.CoordinatesToCellName(1, i+1)
			if err != nil {
				return nil, err
			}
			if err := f.SetSheetRow(sheet, cell, &row); err != nil {
				return nil, fmt.Errorf("writing sheet %s row %d: %w", sheet, i+1, err)
			}
		}
	}
	var buf bytes.Buffer
	if err := f.Write(&buf); err != nil {
		return nil, fmt.Errorf("writing the workbook: %w", err)
	}
	return buf.Bytes(), nil
}
