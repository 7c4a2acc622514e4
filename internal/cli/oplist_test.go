package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/server"
)

// op list shows operations in the order they were made, newest last, on
// one page and across pages.
func TestOpListIsOldestFirstAcrossPages(t *testing.T) {
	isolate(t)
	rs := startRealServer(t, server.Config{})
	c, err := client.New(client.Config{URL: "unix://" + rs.socket})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var made []string
	for i := range 12 {
		raw := make([]byte, 64<<10)
		op, err := c.UploadImage(ctx, fmt.Sprintf("img-%d", i), api.ImageDisk, bytes.NewReader(raw), int64(len(raw)), nil)
		if err != nil {
			t.Fatal(err)
		}
		// A project runs few imports at once: one at a time here.
		if _, err := c.WaitOperation(ctx, op.ID, nil); err != nil {
			t.Fatal(err)
		}
		made = append(made, op.ID)
	}

	out, errOut, code := cli(t, "", rs.asRoot("-o", "json", "op", "list")...)
	var l api.List[api.Operation]
	if code != ExitOK || json.Unmarshal([]byte(out), &l) != nil {
		t.Fatalf("op list -o json: exit %d\n%s%s", code, out, errOut)
	}
	if got := opIDs(l.Items); strings.Join(got, " ") != strings.Join(made, " ") {
		t.Errorf("op list -o json is not in the order the operations were made:\n got %v\nwant %v", got, made)
	}

	// The table, newest last.
	out, _, _ = cli(t, "", rs.asRoot("op", "list")...)
	last := -1
	for _, id := range made {
		i := strings.Index(out, id)
		if i < last {
			t.Errorf("op list: %s is listed before an older operation:\n%s", id, out)
		}
		last = i
	}

	// Page by page, through the API.
	var paged []string
	opts := api.ListOptions{Limit: 5}
	for {
		page, err := c.ListOperations(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		paged = append(paged, opIDs(page.Items)...)
		if page.Continue == "" {
			break
		}
		opts.Continue = page.Continue
	}
	if strings.Join(paged, " ") != strings.Join(made, " ") {
		t.Errorf("pages of 5 are not in the order the operations were made:\n got %v\nwant %v", paged, made)
	}
	// --limit lists the oldest.
	out, _, _ = cli(t, "", rs.asRoot("-o", "json", "op", "list", "--limit", "3")...)
	l = api.List[api.Operation]{}
	if json.Unmarshal([]byte(out), &l) != nil || strings.Join(opIDs(l.Items), " ") != strings.Join(made[:3], " ") {
		t.Errorf("op list --limit 3:\n%s", out)
	}
}

func opIDs(ops []api.Operation) []string {
	ids := make([]string, len(ops))
	for i, op := range ops {
		ids[i] = op.ID
	}
	return ids
}

// Operations of ids that do not sort by time (made by an older server)
// are still shown oldest first.
func TestSortOperations(t *testing.T) {
	t0 := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	ops := []api.Operation{
		{ID: "c", CreatedAt: t0.Add(2 * time.Second)},
		{ID: "b", CreatedAt: t0},
		{ID: "a", CreatedAt: t0.Add(time.Second)},
		{ID: "0", CreatedAt: t0},
	}
	sortOperations(ops)
	if got := strings.Join(opIDs(ops), ""); got != "0bac" {
		t.Errorf("sorted: %s, want 0bac", got)
	}
}
