package vsphere

import (
	"context"
	"fmt"
	"reflect"

	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/polyvisor/polyvisor/internal/provider"
)

// Properties read for each kind of object.
var (
	vmProps = []string{
		"name", "parent", "parentVApp",
		"runtime.powerState", "runtime.host",
		"config.hardware.numCPU", "config.hardware.memoryMB", "config.guestFullName",
		"config.template", "config.hardware.device",
		"guest.ipAddress", "guest.net",
	}
	hostProps = []string{
		"name", "parent",
		"summary.hardware.numCpuThreads", "summary.hardware.memorySize",
		"runtime.connectionState", "runtime.inMaintenanceMode",
		"summary.config.product",
	}
	datastoreProps = []string{"name", "parent", "summary.capacity", "summary.freeSpace"}
	// treeProps place an object in the inventory tree. ComputeResource
	// covers ClusterComputeResource, Network covers distributed port
	// groups and opaque networks, Folder covers storage pods.
	treeProps = []string{"name", "parent"}
	vappProps = []string{"name", "parentFolder", "parentVApp"}
)

// What a property-set selection includes.
const (
	withVMs        = 1 << iota // VirtualMachine properties
	withDatastores             // Datastore properties
)

// propSpecs returns the property specs for the objects a retrieval or a
// watch needs. Hosts and the inventory tree are always in.
func propSpecs(with int) []types.PropertySpec {
	specs := []types.PropertySpec{
		{Type: "HostSystem", PathSet: hostProps},
		{Type: "ComputeResource", PathSet: treeProps},
		{Type: "Datacenter", PathSet: treeProps},
		{Type: "Network", PathSet: treeProps},
		{Type: "Folder", PathSet: treeProps},
		{Type: "VirtualApp", PathSet: vappProps},
	}
	if with&withVMs != 0 {
		specs = append(specs, types.PropertySpec{Type: "VirtualMachine", PathSet: vmProps})
	}
	if with&withDatastores != 0 {
		specs = append(specs, types.PropertySpec{Type: "Datastore", PathSet: datastoreProps})
	}
	return specs
}

// viewFilter selects every object of a container view, with props.
func viewFilter(v types.ManagedObjectReference, props []types.PropertySpec) types.PropertyFilterSpec {
	return types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{
			Obj:  v,
			Skip: types.NewBool(true),
			SelectSet: []types.BaseSelectionSpec{
				&types.TraversalSpec{Type: "ContainerView", Path: "view"},
			},
		}},
		PropSet: props,
	}
}

// objectFilter selects one object, with paths.
func objectFilter(ref types.ManagedObjectReference, paths ...string) types.PropertyFilterSpec {
	return types.PropertyFilterSpec{
		ObjectSet: []types.ObjectSpec{{Obj: ref, Skip: types.NewBool(false)}},
		PropSet:   []types.PropertySpec{{Type: ref.Type, PathSet: paths}},
	}
}

// retrieve runs one RetrievePropertiesEx (continued while the server
// pages its answer) for all of specs.
func retrieve(ctx context.Context, c *vim25.Client, specs ...types.PropertyFilterSpec) ([]types.ObjectContent, error) {
	res, err := property.DefaultCollector(c).RetrieveProperties(ctx, types.RetrieveProperties{SpecSet: specs})
	if err != nil {
		return nil, classify(err)
	}
	return res.Returnval, nil
}

// props reads paths of one object into a map by path; a path the object
// does not have is absent.
func props(ctx context.Context, c *vim25.Client, ref types.ManagedObjectReference, paths ...string) (map[string]any, error) {
	objs, err := retrieve(ctx, c, objectFilter(ref, paths...))
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	for _, oc := range objs {
		if oc.Obj != ref {
			continue
		}
		for _, dp := range oc.PropSet {
			m[dp.Name] = dp.Val
		}
		return m, nil
	}
	return nil, fmt.Errorf("%s %s: %w", ref.Type, ref.Value, provider.ErrNotFound)
}

// Property values as they decode: numbers come as the XML schema's sized
// integers, references by value.

func asString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	// Enumerations decode as their own string types.
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.String {
		return rv.String()
	}
	return ""
}

func asInt(v any) int64 {
	switch n := v.(type) {
	case int16:
		return int64(n)
	case int32:
		return int64(n)
	case int64:
		return n
	case int:
		return int64(n)
	case int8:
		return int64(n)
	}
	return 0
}

func asBool(v any) bool {
	b, _ := v.(bool)
	return b
}

func asRef(v any) types.ManagedObjectReference {
	switch r := v.(type) {
	case types.ManagedObjectReference:
		return r
	case *types.ManagedObjectReference:
		if r != nil {
			return *r
		}
	}
	return types.ManagedObjectReference{}
}
