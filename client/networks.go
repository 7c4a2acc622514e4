package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/polyvisor/polyvisor/api"
)

// NetworkListOptions narrow the lists of subnets and ports beyond the
// common options.
type NetworkListOptions struct {
	api.ListOptions
	Network string // subnets and ports of this network
	VM      string // ports of this VM
}

// listAllWith fetches every page of a list route with extra query
// parameters.
func listAllWith[T any](ctx context.Context, c *Client, path string, opts api.ListOptions, extra url.Values) ([]T, error) {
	var all []T
	for {
		q := listQuery(opts)
		for k, v := range extra {
			if len(v) > 0 && v[0] != "" {
				q[k] = v
			}
		}
		var page api.List[T]
		if err := c.call(ctx, request{method: http.MethodGet, path: path, query: q}, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Items...)
		if page.Continue == "" {
			return all, nil
		}
		if page.Continue == opts.Continue {
			return nil, fmt.Errorf("list %s: server repeated continue token %q", path, page.Continue)
		}
		opts.Continue = page.Continue
	}
}

// do calls a route of a network object, naming it in the error.
func (c *Client) do(ctx context.Context, what string, r request, out any) error {
	if err := c.call(ctx, r, out); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// ListNetworks returns every network of the project: its own, the external
// networks, then those of the providers bound to it (opts.Provider: one
// provider's only, or "none").
func (c *Client) ListNetworks(ctx context.Context, opts api.ListOptions) ([]api.Network, error) {
	all, err := listAllWith[api.Network](ctx, c, "/v1/networks", opts, nil)
	if err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	return all, nil
}

// GetNetwork returns a network; provider, when not empty, looks among that
// provider's networks.
func (c *Client) GetNetwork(ctx context.Context, name, provider string) (*api.Network, error) {
	var n api.Network
	q := url.Values{}
	if provider != "" {
		q.Set("provider", provider)
	}
	return &n, c.do(ctx, fmt.Sprintf("get network %q", name), request{method: http.MethodGet, path: route("/v1/networks/%s", name), query: q}, &n)
}

// CreateNetwork makes a network.
func (c *Client) CreateNetwork(ctx context.Context, req api.NetworkCreate) (*api.Network, error) {
	var n api.Network
	return &n, c.do(ctx, fmt.Sprintf("create network %q", req.Name), request{method: http.MethodPost, path: "/v1/networks", body: req}, &n)
}

// DeleteNetwork deletes a network and its subnets.
func (c *Client) DeleteNetwork(ctx context.Context, name string) error {
	return c.do(ctx, fmt.Sprintf("delete network %q", name), request{method: http.MethodDelete, path: route("/v1/networks/%s", name)}, nil)
}

// ListSubnets returns every subnet of the project (and of the external
// networks), of opts.Network only when set.
func (c *Client) ListSubnets(ctx context.Context, opts NetworkListOptions) ([]api.Subnet, error) {
	all, err := listAllWith[api.Subnet](ctx, c, "/v1/subnets", opts.ListOptions, url.Values{"network": {opts.Network}})
	if err != nil {
		return nil, fmt.Errorf("list subnets: %w", err)
	}
	return all, nil
}

// GetSubnet returns a subnet.
func (c *Client) GetSubnet(ctx context.Context, name string) (*api.Subnet, error) {
	var s api.Subnet
	return &s, c.do(ctx, fmt.Sprintf("get subnet %q", name), request{method: http.MethodGet, path: route("/v1/subnets/%s", name)}, &s)
}

// CreateSubnet adds a subnet to a network.
func (c *Client) CreateSubnet(ctx context.Context, req api.SubnetCreate) (*api.Subnet, error) {
	var s api.Subnet
	return &s, c.do(ctx, fmt.Sprintf("create subnet %q", req.Name), request{method: http.MethodPost, path: "/v1/subnets", body: req}, &s)
}

// DeleteSubnet deletes a subnet none of whose addresses is in use.
func (c *Client) DeleteSubnet(ctx context.Context, name string) error {
	return c.do(ctx, fmt.Sprintf("delete subnet %q", name), request{method: http.MethodDelete, path: route("/v1/subnets/%s", name)}, nil)
}

// ListPorts returns every port of the project, narrowed by opts.
func (c *Client) ListPorts(ctx context.Context, opts NetworkListOptions) ([]api.Port, error) {
	all, err := listAllWith[api.Port](ctx, c, "/v1/ports", opts.ListOptions, url.Values{"network": {opts.Network}, "vm": {opts.VM}})
	if err != nil {
		return nil, fmt.Errorf("list ports: %w", err)
	}
	return all, nil
}

// GetPort returns a port.
func (c *Client) GetPort(ctx context.Context, name string) (*api.Port, error) {
	var p api.Port
	return &p, c.do(ctx, fmt.Sprintf("get port %q", name), request{method: http.MethodGet, path: route("/v1/ports/%s", name)}, &p)
}

// CreatePort makes a port.
func (c *Client) CreatePort(ctx context.Context, req api.PortCreate) (*api.Port, error) {
	var p api.Port
	return &p, c.do(ctx, fmt.Sprintf("create port %q", req.Name), request{method: http.MethodPost, path: "/v1/ports", body: req}, &p)
}

// UpdatePort changes a port's security groups or port security.
func (c *Client) UpdatePort(ctx context.Context, name string, upd api.PortUpdate) (*api.Port, error) {
	var p api.Port
	return &p, c.do(ctx, fmt.Sprintf("update port %q", name), request{method: http.MethodPatch, path: route("/v1/ports/%s", name), body: upd}, &p)
}

// DeletePort deletes a port no VM uses.
func (c *Client) DeletePort(ctx context.Context, name string) error {
	return c.do(ctx, fmt.Sprintf("delete port %q", name), request{method: http.MethodDelete, path: route("/v1/ports/%s", name)}, nil)
}

// ListSecurityGroups returns every security group of the project.
func (c *Client) ListSecurityGroups(ctx context.Context, opts api.ListOptions) ([]api.SecurityGroup, error) {
	all, err := listAllWith[api.SecurityGroup](ctx, c, "/v1/security-groups", opts, nil)
	if err != nil {
		return nil, fmt.Errorf("list security groups: %w", err)
	}
	return all, nil
}

// GetSecurityGroup returns a security group.
func (c *Client) GetSecurityGroup(ctx context.Context, name string) (*api.SecurityGroup, error) {
	var g api.SecurityGroup
	return &g, c.do(ctx, fmt.Sprintf("get security group %q", name), request{method: http.MethodGet, path: route("/v1/security-groups/%s", name)}, &g)
}

// CreateSecurityGroup makes a security group.
func (c *Client) CreateSecurityGroup(ctx context.Context, req api.SecurityGroupCreate) (*api.SecurityGroup, error) {
	var g api.SecurityGroup
	return &g, c.do(ctx, fmt.Sprintf("create security group %q", req.Name), request{method: http.MethodPost, path: "/v1/security-groups", body: req}, &g)
}

// UpdateSecurityGroup changes a group's description or replaces its rules.
func (c *Client) UpdateSecurityGroup(ctx context.Context, name string, upd api.SecurityGroupUpdate) (*api.SecurityGroup, error) {
	var g api.SecurityGroup
	return &g, c.do(ctx, fmt.Sprintf("update security group %q", name), request{method: http.MethodPatch, path: route("/v1/security-groups/%s", name), body: upd}, &g)
}

// AddSecurityGroupRules adds rules to a group and returns the group.
func (c *Client) AddSecurityGroupRules(ctx context.Context, name string, rules []api.SecurityGroupRule) (*api.SecurityGroup, error) {
	var g api.SecurityGroup
	return &g, c.do(ctx, fmt.Sprintf("add rules to security group %q", name),
		request{method: http.MethodPost, path: route("/v1/security-groups/%s/rules", name), body: api.SecurityGroupRules{Rules: rules}}, &g)
}

// RemoveSecurityGroupRule removes a rule of a group by its id.
func (c *Client) RemoveSecurityGroupRule(ctx context.Context, name, id string) (*api.SecurityGroup, error) {
	var g api.SecurityGroup
	return &g, c.do(ctx, fmt.Sprintf("remove rule %q of security group %q", id, name),
		request{method: http.MethodDelete, path: route("/v1/security-groups/%s/rules/%s", name, id)}, &g)
}

// DeleteSecurityGroup deletes a group no port uses.
func (c *Client) DeleteSecurityGroup(ctx context.Context, name string) error {
	return c.do(ctx, fmt.Sprintf("delete security group %q", name), request{method: http.MethodDelete, path: route("/v1/security-groups/%s", name)}, nil)
}

// ListFloatingIPs returns every floating IP of the project.
func (c *Client) ListFloatingIPs(ctx context.Context, opts api.ListOptions) ([]api.FloatingIP, error) {
	all, err := listAllWith[api.FloatingIP](ctx, c, "/v1/floating-ips", opts, nil)
	if err != nil {
		return nil, fmt.Errorf("list floating IPs: %w", err)
	}
	return all, nil
}

// GetFloatingIP returns a floating IP.
func (c *Client) GetFloatingIP(ctx context.Context, name string) (*api.FloatingIP, error) {
	var f api.FloatingIP
	return &f, c.do(ctx, fmt.Sprintf("get floating IP %q", name), request{method: http.MethodGet, path: route("/v1/floating-ips/%s", name)}, &f)
}

// CreateFloatingIP allocates a floating IP of an external network.
func (c *Client) CreateFloatingIP(ctx context.Context, req api.FloatingIPCreate) (*api.FloatingIP, error) {
	var f api.FloatingIP
	return &f, c.do(ctx, fmt.Sprintf("create floating IP %q", req.Name), request{method: http.MethodPost, path: "/v1/floating-ips", body: req}, &f)
}

// AssociateFloatingIP maps a floating IP to a port.
func (c *Client) AssociateFloatingIP(ctx context.Context, name, port string) (*api.FloatingIP, error) {
	var f api.FloatingIP
	return &f, c.do(ctx, fmt.Sprintf("associate floating IP %q", name),
		request{method: http.MethodPost, path: route("/v1/floating-ips/%s/associate", name), body: api.FloatingIPAssociate{Port: port}}, &f)
}

// DisassociateFloatingIP unmaps a floating IP from its port.
func (c *Client) DisassociateFloatingIP(ctx context.Context, name string) (*api.FloatingIP, error) {
	var f api.FloatingIP
	return &f, c.do(ctx, fmt.Sprintf("disassociate floating IP %q", name),
		request{method: http.MethodPost, path: route("/v1/floating-ips/%s/disassociate", name)}, &f)
}

// DeleteFloatingIP releases a floating IP.
func (c *Client) DeleteFloatingIP(ctx context.Context, name string) error {
	return c.do(ctx, fmt.Sprintf("delete floating IP %q", name), request{method: http.MethodDelete, path: route("/v1/floating-ips/%s", name)}, nil)
}

// AddNIC adds a NIC to a VM (hot plugged while it runs) and returns the
// vm.nic.add operation.
func (c *Client) AddNIC(ctx context.Context, vm string, nic api.NIC) (*api.Operation, error) {
	var op api.Operation
	return &op, c.do(ctx, fmt.Sprintf("add a NIC to VM %q", vm), request{method: http.MethodPost, path: route("/v1/vms/%s/nics", vm), body: nic}, &op)
}

// RemoveNIC removes NIC index of a VM and returns the vm.nic.remove
// operation.
func (c *Client) RemoveNIC(ctx context.Context, vm string, index int) (*api.Operation, error) {
	var op api.Operation
	return &op, c.do(ctx, fmt.Sprintf("remove NIC %d of VM %q", index, vm),
		request{method: http.MethodDelete, path: route("/v1/vms/%s/nics/%s", vm, strconv.Itoa(index))}, &op)
}

// ReportPorts tells the server which of its host's ports an agent made.
func (c *Client) ReportPorts(ctx context.Context, host string, rep api.PortReport) (*api.PortReportResult, error) {
	var out api.PortReportResult
	return &out, c.do(ctx, fmt.Sprintf("report the ports of host %q", host),
		request{method: http.MethodPut, path: route("/v1/agent/hosts/%s/ports", host), body: rep}, &out)
}
