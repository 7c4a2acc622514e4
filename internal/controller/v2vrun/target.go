package v2vrun

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
)

// ErrImportsBusy says the project runs as many image imports as it may at
// once (its users' or other VMs' of the migration): the import is tried
// again once one ends.
var ErrImportsBusy = errors.New("the project's image imports are all taken")

// Target makes the migration's images and VMs in its project.
type Target interface {
	// Image returns the project's image called name, nil when none.
	Image(ctx context.Context, project, name string) (*api.Image, error)
	// ImportImage imports the disk at path as the project's image name
	// and returns its UID once ready; progress is told the bytes sent.
	// ErrImportsBusy when the project's import slots are all taken.
	ImportImage(ctx context.Context, project, name, path string, progress func(sent, total int64)) (string, error)
	DeleteImage(ctx context.Context, project, name string) error
	// VM returns the project's VM called name, nil when none.
	VM(ctx context.Context, project, name string) (*api.VM, error)
	// CreateVM creates a VM and waits for its create to end.
	CreateVM(ctx context.Context, project string, vm api.VMCreate) error
	// DeleteVM deletes a VM and its disks and waits for it to go.
	DeleteVM(ctx context.Context, project, name string) error
}

// ClientTarget makes images and VMs through the API, as its client
// (the server's own, in process) may.
type ClientTarget struct {
	// Client returns a client acting in project.
	Client func(project string) *client.Client
}

var _ Target = ClientTarget{}

func (t ClientTarget) Image(ctx context.Context, project, name string) (*api.Image, error) {
	img, err := t.Client(project).GetImage(ctx, name)
	if client.IsNotFound(err) {
		return nil, nil
	}
	return img, err
}

func (t ClientTarget) ImportImage(ctx context.Context, project, name, path string, progress func(sent, total int64)) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("opening copied disk: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("opening copied disk: %w", err)
	}
	c := t.Client(project)
	op, err := c.UploadImage(ctx, name, api.ImageDisk, f, fi.Size(), func(sent int64) { progress(sent, fi.Size()) })
	if client.ErrorCode(err) == api.CodeTooManyRequests {
		return "", fmt.Errorf("%w: %w", ErrImportsBusy, err)
	}
	if err != nil {
		return "", err
	}
	if err := wait(ctx, c, op); err != nil {
		return "", fmt.Errorf("importing image %q: %w", name, err)
	}
	return op.Target.UID, nil
}

func (t ClientTarget) DeleteImage(ctx context.Context, project, name string) error {
	c := t.Client(project)
	op, err := c.DeleteImage(ctx, name)
	if client.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return wait(ctx, c, op)
}

func (t ClientTarget) VM(ctx context.Context, project, name string) (*api.VM, error) {
	vm, err := t.Client(project).GetVM(ctx, name)
	if client.IsNotFound(err) {
		return nil, nil
	}
	return vm, err
}

func (t ClientTarget) CreateVM(ctx context.Context, project string, vm api.VMCreate) error {
	c := t.Client(project)
	op, err := c.CreateVM(ctx, vm, client.CreateOptions{})
	if err != nil {
		return err
	}
	return wait(ctx, c, op)
}

func (t ClientTarget) DeleteVM(ctx context.Context, project, name string) error {
	c := t.Client(project)
	op, err := c.DeleteVM(ctx, name, false)
	if client.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	return wait(ctx, c, op)
}

func wait(ctx context.Context, c *client.Client, op *api.Operation) error {
	if op == nil {
		return nil
	}
	final, err := c.WaitOperation(ctx, op.ID, nil)
	if err != nil {
		return err
	}
	return client.OperationError(final)
}
