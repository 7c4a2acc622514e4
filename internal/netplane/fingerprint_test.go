package netplane

import (
	"fmt"
	"reflect"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// fill gives every field of v (strings, numbers, booleans, slices of one
// element, structs) a value that is not its zero value.
func fill(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(1)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0))
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			fill(v.Field(i))
		}
	default:
		panic(fmt.Sprintf("fill: a field of kind %s", v.Kind()))
	}
}

// leaves calls fn with each leaf field of v and its path.
func leaves(v reflect.Value, path string, fn func(reflect.Value, string)) {
	switch v.Kind() {
	case reflect.Slice:
		leaves(v.Index(0), path+"[0]", fn)
	case reflect.Struct:
		for i := 0; i < v.NumField(); i++ {
			leaves(v.Field(i), path+"."+v.Type().Field(i).Name, fn)
		}
	default:
		fn(v, path)
	}
}

func change(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString(v.String() + "y")
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(v.Int() + 1)
	case reflect.Bool:
		v.SetBool(!v.Bool())
	}
}

// TestStateFingerprints: a change of any field of a port, remote port,
// security group (its rules and members) or floating IP changes the
// fingerprint Apply decides by, so no field added to these types can be
// left out of it unnoticed.
func TestStateFingerprints(t *testing.T) {
	check := func(sample any, fp func(any) [32]byte) {
		t.Helper()
		v := reflect.New(reflect.TypeOf(sample)).Elem()
		fill(v)
		base := fp(v.Interface())
		leaves(v, v.Type().Name(), func(leaf reflect.Value, path string) {
			old := reflect.ValueOf(leaf.Interface())
			change(leaf)
			if fp(v.Interface()) == base {
				t.Errorf("a change of %s leaves the fingerprint as it was", path)
			}
			leaf.Set(old)
		})
		// Two elements are not one.
		two := reflect.Append(v, v.Index(0))
		if fp(two.Interface()) == base {
			t.Errorf("%s: a second element leaves the fingerprint as it was", v.Type())
		}
	}
	check([]api.HostPort{}, func(x any) [32]byte { return fpPorts(x.([]api.HostPort)) })
	check([]api.RemotePort{}, func(x any) [32]byte { return fpRemote(x.([]api.RemotePort)) })
	check([]api.HostSecurityGroup{}, func(x any) [32]byte { return fpGroups(x.([]api.HostSecurityGroup)) })
	check([]api.HostFloatingIP{}, func(x any) [32]byte { return fpFloatingIPs(x.([]api.HostFloatingIP)) })
}
