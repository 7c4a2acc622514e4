package server

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/controller/ops"
)

// TestIdempotencyKeyReusedWithAnotherBody: a retry with the same key and
// the same request (however spaced and ordered) gets the first operation;
// the same key with another request is refused with 422 naming the
// mismatch, and makes nothing.
func TestIdempotencyKeyReusedWithAnotherBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	create := func(key, body string) (int, api.Operation, api.ErrorBody) {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.url+"/v1/vms?project=pa", bytes.NewReader([]byte(body)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+e.tokens[api.RoleMember])
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		resp, err := e.super.HTTPClient().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var op api.Operation
		var eb api.ErrorBody
		var raw json.RawMessage
		_ = json.NewDecoder(resp.Body).Decode(&raw)
		_ = json.Unmarshal(raw, &op)
		_ = json.Unmarshal(raw, &eb)
		return resp.StatusCode, op, eb
	}
	first := `{"name":"idem-a","vcpus":1,"memoryMiB":64,"host":"h1","disks":[{"image":"img"}],"labels":{"a":"1","b":"2"}}`
	st, op1, _ := create("key-1", first)
	if st != http.StatusAccepted || op1.ID == "" {
		t.Fatalf("first create: %d %+v", st, op1)
	}
	// The same request, spaced and ordered otherwise: the first operation.
	same := `{ "labels": {"b":"2", "a":"1"}, "disks": [ {"image": "img"} ], "host": "h1",
		"memoryMiB": 64, "vcpus": 1, "name": "idem-a" }`
	if st, op, _ := create("key-1", same); st != http.StatusAccepted || op.ID != op1.ID {
		t.Errorf("retry of the same request: %d, operation %q; want 202 with %q", st, op.ID, op1.ID)
	}
	// Another request with the same key: 422, and nothing made.
	for what, body := range map[string]string{
		"another name":   `{"name":"idem-b","vcpus":1,"memoryMiB":64,"host":"h1","disks":[{"image":"img"}],"labels":{"a":"1","b":"2"}}`,
		"another memory": `{"name":"idem-a","vcpus":1,"memoryMiB":128,"host":"h1","disks":[{"image":"img"}],"labels":{"a":"1","b":"2"}}`,
		"a label less":   `{"name":"idem-a","vcpus":1,"memoryMiB":64,"host":"h1","disks":[{"image":"img"}],"labels":{"a":"1"}}`,
	} {
		st, _, eb := create("key-1", body)
		if st != http.StatusUnprocessableEntity || eb.Error == nil || eb.Error.Field != "Idempotency-Key" ||
			eb.Error.Details["mismatch"] != "body" || eb.Error.Details["operation"] != op1.ID {
			t.Errorf("%s with a used key: %d %+v; want 422 naming Idempotency-Key and a body mismatch", what, st, eb.Error)
		}
	}
	if _, ok := e.s.vms.Get("pa/idem-b"); ok {
		t.Error("a create refused for its reused key made its vm")
	}
	if vm, _ := e.s.vms.Get("pa/idem-a"); vm == nil || vm.Spec.MemoryMiB != 64 {
		t.Errorf("vm idem-a: %+v; want the first request's", vm)
	}
	// The same body under a new key is a new request (409: the name is taken).
	if st, _, _ := create("key-2", first); st != http.StatusConflict {
		t.Errorf("the same body with a new key: %d, want 409", st)
	}

	// A record written before records kept the request matches any.
	name := idempotencyName("pa\x00r-member\x00old-key")
	if _, err := e.s.idem.Create(ctx, name, &ops.IdempotencyRecord{Name: name, OperationID: op1.ID, CreatedAt: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if st, op, _ := create("old-key", `{"name":"idem-c","vcpus":1,"memoryMiB":64,"host":"h1","disks":[{"image":"img"}]}`); st != http.StatusAccepted || op.ID != op1.ID {
		t.Errorf("key of an old record: %d %q, want 202 with %q", st, op.ID, op1.ID)
	}
}
