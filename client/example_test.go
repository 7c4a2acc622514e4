package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// Create a VM and wait for its operation, printing the progress. The
// server here is a stand-in that answers the two routes involved.
func Example() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		op := api.Operation{ID: "op-1", Kind: api.OpVMCreate, Target: api.Ref{Kind: "vm", Name: "web1"}}
		switch r.Method {
		case http.MethodPost: // POST /v1/vms
			op.Status = api.OpPending
			w.WriteHeader(http.StatusAccepted)
		default: // GET /v1/operations/op-1?wait=30s
			op.Status, op.Progress = api.OpSucceeded, 100
		}
		_ = json.NewEncoder(w).Encode(op)
	}))
	defer srv.Close()

	ctx := context.Background()
	c, err := client.New(client.Config{URL: srv.URL, Token: "admin-token"})
	if err != nil {
		fmt.Println(err)
		return
	}
	op, err := c.CreateVM(ctx, api.VMCreate{Name: "web1", VCPUs: 1, MemoryMiB: 512,
		Disks: []api.Disk{{Name: "root", Image: "debian-12"}}}, client.CreateOptions{IdempotencyKey: "web1-1"})
	if err != nil {
		fmt.Println(err)
		return
	}
	op, err = c.WaitOperation(ctx, op.ID, func(op *api.Operation) {
		fmt.Printf("%s: %s %d%%\n", op.Kind, op.Status, op.Progress)
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := client.OperationError(op); err != nil {
		fmt.Println(err)
	}
	// Output:
	// vm.create: succeeded 100%
}

// Tell a missing object from other failures.
func ExampleStatusError() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(api.ErrorBody{Error: api.NotFound("VM", "ghost")})
	}))
	defer srv.Close()

	c, _ := client.New(client.Config{URL: srv.URL})
	_, err := c.GetVM(context.Background(), "ghost")

	var apiErr *api.Error
	if errors.As(err, &apiErr) && apiErr.Code == api.CodeNotFound {
		fmt.Println("missing:", apiErr.Message, "- HTTP", client.HTTPStatus(err))
	}
	// Output:
	// missing: VM "ghost" not found - HTTP 404
}
