package server

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/audit"
)

// Every string a request body carries is bounded, and so is every list
// and map, whatever the type: what a caller writes is stored (a
// description, a display name, a label) and kept with every revision of
// the object, so one PATCH of a megabyte, repeated, fills the store. Names
// and labels have stricter rules of their own; the bounds here hold for
// every field of every body, present and future, and an error names the
// field at fault.
const (
	// maxTextBytes bounds a string: descriptions, display names, names
	// and messages.
	maxTextBytes = 1024
	// maxItems bounds a list or a map.
	maxItems = 256
)

// textLimits are the strings allowed more than maxTextBytes, by the type
// that holds them and their JSON name.
var textLimits = map[reflect.Type]map[string]int{
	reflect.TypeFor[api.CloudInit](): {"userData": maxCloudInitBytes, "metaData": maxCloudInitBytes, "networkConfig": maxCloudInitBytes},
	reflect.TypeFor[api.Boot]():      {"cmdline": maxCmdlineBytes},
	// A CA bundle, and URLs that carry signed queries.
	reflect.TypeFor[api.ProviderCreate](): {"caCert": 64 << 10, "url": 8 << 10},
	reflect.TypeFor[api.ImageCreate]():    {"url": 8 << 10},
	// What a host reports of its VMs and of itself: paths, and errors with
	// the tail of a log.
	reflect.TypeFor[api.VMError]():         {"message": 16 << 10},
	reflect.TypeFor[api.VMStatus]():        {"reason": 16 << 10},
	reflect.TypeFor[api.DiskStatus]():      {"path": 4096},
	reflect.TypeFor[api.Console]():         {"serial": 4096, "vnc": 4096},
	reflect.TypeFor[api.HostStatus]():      {"accelReason": 4096, "warnings": 4096},
	reflect.TypeFor[api.HostConfinement](): {"network": 4096, "notes": 4096},
	// A migration runner cuts its errors to this bound.
	reflect.TypeFor[api.VMMigrationStatus]():   {"error": api.MaxMigrationErrorBytes},
	reflect.TypeFor[api.VMMigrationVMStatus](): {"error": api.MaxMigrationErrorBytes},
}

// itemLimits are the lists and maps allowed more than maxItems.
var itemLimits = map[reflect.Type]map[string]int{
	reflect.TypeFor[api.ImageSettings](): {"fetchAllowNetworks": 4096, "fetchAllowHosts": 4096},
	// A migration's VMs, which its record and every report list.
	reflect.TypeFor[api.VMMigrationCreate](): {"vms": api.MaxMigrationVMs},
	reflect.TypeFor[api.VMMigrationStatus](): {"vms": api.MaxMigrationVMs},
}

// checkBounds checks every string, list and map of a decoded request body
// against its bound.
func checkBounds(v any) error {
	return walkBounds(reflect.ValueOf(v), "", maxTextBytes, maxItems)
}

func walkBounds(v reflect.Value, path string, textMax, itemMax int) error {
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return nil
		}
		return walkBounds(v.Elem(), path, textMax, itemMax)
	case reflect.String:
		if n := v.Len(); n > textMax {
			return api.Invalid(fieldName(path), "is %d bytes, more than the %d allowed", n, textMax)
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			if n := v.Len(); n > textMax {
				return api.Invalid(fieldName(path), "is %d bytes, more than the %d allowed", n, textMax)
			}
			return nil
		}
		if n := v.Len(); n > itemMax {
			return api.Invalid(fieldName(path), "has %d items, more than the %d allowed", n, itemMax)
		}
		for i := range v.Len() {
			if err := walkBounds(v.Index(i), fmt.Sprintf("%s[%d]", path, i), textMax, maxItems); err != nil {
				return err
			}
		}
	case reflect.Map:
		if n := v.Len(); n > itemMax {
			return api.Invalid(fieldName(path), "has %d items, more than the %d allowed", n, itemMax)
		}
		iter := v.MapRange()
		for iter.Next() {
			key := fmt.Sprint(iter.Key().Interface())
			at := join(path, audit.Truncate(key, 64))
			if len(key) > maxTextBytes {
				return api.Invalid(at, "key is %d bytes, more than the %d allowed", len(key), maxTextBytes)
			}
			if err := walkBounds(iter.Value(), at, textMax, maxItems); err != nil {
				return err
			}
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			at := path
			if !f.Anonymous || name != "" {
				if name == "" {
					name = f.Name
				}
				at = join(path, name)
			}
			tm, im := maxTextBytes, maxItems
			if l, ok := textLimits[t][name]; ok {
				tm = l
			}
			if l, ok := itemLimits[t][name]; ok {
				im = l
			}
			if err := walkBounds(v.Field(i), at, tm, im); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func fieldName(path string) string {
	if path == "" {
		return "body"
	}
	return path
}
