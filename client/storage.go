package client

import (
	"context"
	"fmt"
	"net/http"

	"github.com/polyvisor/polyvisor/api"
)

// ListPools returns the pools the caller may see.
func (c *Client) ListPools(ctx context.Context) ([]api.Pool, error) {
	all, err := listAll[api.Pool](ctx, c, "/v1/pools", api.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	return all, nil
}

// GetPool returns one pool.
func (c *Client) GetPool(ctx context.Context, name string) (*api.Pool, error) {
	var p api.Pool
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/pools/%s", name)}, &p); err != nil {
		return nil, fmt.Errorf("get pool %q: %w", name, err)
	}
	return &p, nil
}

// CreatePool defines a pool (superadmins).
func (c *Client) CreatePool(ctx context.Context, req api.PoolCreate) (*api.Pool, error) {
	var p api.Pool
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/pools", body: req}, &p); err != nil {
		return nil, fmt.Errorf("create pool %q: %w", req.Name, err)
	}
	return &p, nil
}

// UpdatePool changes the projects a pool is granted to (superadmins).
func (c *Client) UpdatePool(ctx context.Context, name string, req api.PoolUpdate) (*api.Pool, error) {
	var p api.Pool
	if err := c.call(ctx, request{method: http.MethodPatch, path: route("/v1/pools/%s", name), body: req}, &p); err != nil {
		return nil, fmt.Errorf("update pool %q: %w", name, err)
	}
	return &p, nil
}

// DeletePool deletes a pool that holds no volumes (superadmins).
func (c *Client) DeletePool(ctx context.Context, name string) error {
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/pools/%s", name)}, nil); err != nil {
		return fmt.Errorf("delete pool %q: %w", name, err)
	}
	return nil
}

// ListVolumes returns one page of the project's volumes.
func (c *Client) ListVolumes(ctx context.Context, opts api.ListOptions) (*api.List[api.Volume], error) {
	l, err := list[api.Volume](ctx, c, "/v1/volumes", opts)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	return l, nil
}

// GetVolume returns one volume of the project.
func (c *Client) GetVolume(ctx context.Context, name string) (*api.Volume, error) {
	var v api.Volume
	if err := c.call(ctx, request{method: http.MethodGet, path: route("/v1/volumes/%s", name)}, &v); err != nil {
		return nil, fmt.Errorf("get volume %q: %w", name, err)
	}
	return &v, nil
}

// CreateVolume creates a volume; it is pending until its host made it.
func (c *Client) CreateVolume(ctx context.Context, req api.VolumeCreate) (*api.Volume, error) {
	var v api.Volume
	if err := c.call(ctx, request{method: http.MethodPost, path: "/v1/volumes", body: req}, &v); err != nil {
		return nil, fmt.Errorf("create volume %q: %w", req.Name, err)
	}
	return &v, nil
}

// DeleteVolume asks for a volume's deletion; refused while attached.
func (c *Client) DeleteVolume(ctx context.Context, name string) (*api.Volume, error) {
	var v api.Volume
	if err := c.call(ctx, request{method: http.MethodDelete, path: route("/v1/volumes/%s", name)}, &v); err != nil {
		return nil, fmt.Errorf("delete volume %q: %w", name, err)
	}
	return &v, nil
}

func (c *Client) volumeAction(ctx context.Context, method, name, action, doing string, body any) (*api.Volume, error) {
	var v api.Volume
	if err := c.call(ctx, request{method: method, path: route("/v1/volumes/%s/", name) + action, body: body}, &v); err != nil {
		return nil, fmt.Errorf("%s volume %q: %w", doing, name, err)
	}
	return &v, nil
}

// AttachVolume attaches a volume to a VM of its project.
func (c *Client) AttachVolume(ctx context.Context, name, vm string) (*api.Volume, error) {
	return c.volumeAction(ctx, http.MethodPost, name, "attach", "attach", api.VolumeAttach{VM: vm})
}

// DetachVolume detaches a volume from its VM; vm, when not empty, is the
// VM the caller means.
func (c *Client) DetachVolume(ctx context.Context, name, vm string) (*api.Volume, error) {
	var body any
	if vm != "" {
		body = api.VolumeAttach{VM: vm}
	}
	return c.volumeAction(ctx, http.MethodPost, name, "detach", "detach", body)
}

// GrowVolume grows a volume to sizeMiB.
func (c *Client) GrowVolume(ctx context.Context, name string, sizeMiB int64) (*api.Volume, error) {
	return c.volumeAction(ctx, http.MethodPost, name, "grow", "grow", api.VolumeGrow{SizeMiB: sizeMiB})
}

// SetVolumeLimits sets a volume's I/O limits.
func (c *Client) SetVolumeLimits(ctx context.Context, name string, l api.VolumeLimits) (*api.Volume, error) {
	return c.volumeAction(ctx, http.MethodPut, name, "limits", "limit", l)
}

// SnapshotVolume takes a snapshot of a detached volume.
func (c *Client) SnapshotVolume(ctx context.Context, name, snapshot string) (*api.Volume, error) {
	return c.volumeAction(ctx, http.MethodPost, name, "snapshots", "snapshot", api.VolumeSnapshot{Name: snapshot})
}

// DeleteVolumeSnapshot deletes one of a volume's snapshots.
func (c *Client) DeleteVolumeSnapshot(ctx context.Context, name, snapshot string) (*api.Volume, error) {
	return c.volumeAction(ctx, http.MethodDelete, name, route("snapshots/%s", snapshot), "delete the snapshot of", nil)
}

// PutPoolStatus reports this host's view of a pool (agents).
func (c *Client) PutPoolStatus(ctx context.Context, host, pool string, st api.PoolHostStatus) error {
	r := request{method: http.MethodPut, path: route("/v1/agent/hosts/%s/pools/%s", host, pool), body: st}
	if err := c.call(ctx, r, nil); err != nil {
		return fmt.Errorf("report pool %q: %w", pool, err)
	}
	return nil
}

// PutVolumeStatus reports what the host observed of a volume (agents);
// key is the volume's "<project>/<name>".
func (c *Client) PutVolumeStatus(ctx context.Context, host, key string, st api.VolumeStatus) error {
	project, name := api.SplitKey(key)
	r := request{method: http.MethodPut, path: route("/v1/agent/hosts/%s/volumes/%s/%s/status", host, project, name), body: st}
	if err := c.call(ctx, r, nil); err != nil {
		return fmt.Errorf("report status of volume %q: %w", key, err)
	}
	return nil
}

// VolumeRemoved tells the server the host deleted a volume's files (agents).
func (c *Client) VolumeRemoved(ctx context.Context, host, key string) error {
	project, name := api.SplitKey(key)
	r := request{method: http.MethodPost, path: route("/v1/agent/hosts/%s/volumes/%s/%s/removed", host, project, name)}
	if err := c.call(ctx, r, nil); err != nil {
		return fmt.Errorf("report removal of volume %q: %w", key, err)
	}
	return nil
}
