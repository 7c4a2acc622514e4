package server

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// requestTypes are the bodies the API decodes.
var requestTypes = []any{
	api.AgentRegister{}, api.HostStatus{}, api.ImageCreate{}, api.ImageSettings{}, api.ImageUpdate{},
	api.JoinTokenCreate{}, api.LeaseSet{}, api.Login{}, api.MemberSet{}, api.PasswordSet{}, api.ProjectCreate{},
	api.ProjectUpdate{}, api.ProviderCreate{}, api.Quota{}, api.SnapshotCreate{}, api.TokenCreate{}, api.UserCreate{},
	api.UserUpdate{}, api.VMCreate{}, api.VMReconfigure{}, api.VMStatus{}, api.VMStop{},
}

// leaf builds a value of t whose n-th string (depth first, one item per
// list and map) is too long; it returns that string's JSON path, or ""
// when t has fewer strings. n counts down the strings passed.
func leaf(t reflect.Type, path string, n *int) (reflect.Value, string) {
	v := reflect.New(t).Elem()
	switch t.Kind() {
	case reflect.String:
		if *n == 0 {
			v.SetString(strings.Repeat("x", 70<<10))
			*n = -1
			return v, path
		}
		*n--
	case reflect.Pointer:
		if *n < 0 {
			return v, ""
		}
		e, p := leaf(t.Elem(), path, n)
		if p != "" {
			ptr := reflect.New(t.Elem())
			ptr.Elem().Set(e)
			return ptr, p
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return v, ""
		}
		e, p := leaf(t.Elem(), path+"[0]", n)
		if p != "" {
			return reflect.Append(v, e), p
		}
	case reflect.Map:
		e, p := leaf(t.Elem(), join(path, "k"), n)
		if p != "" {
			m := reflect.MakeMap(t)
			m.SetMapIndex(reflect.ValueOf("k").Convert(t.Key()), e)
			return m, p
		}
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if !f.IsExported() || name == "-" || f.Type.PkgPath() == "time" {
				continue
			}
			if name == "" {
				name = f.Name
			}
			e, p := leaf(f.Type, join(path, name), n)
			if p != "" {
				v.Field(i).Set(e)
				return v, p
			}
		}
	}
	return v, ""
}

// Every string field of every request body is bounded, and the error
// names it: 70 KiB in any one of them is refused, whatever the type.
// (Only some fields had bounds: a project's description took a megabyte
// per PATCH.)
func TestEveryRequestStringBounded(t *testing.T) {
	t.Parallel()
	checked := 0
	for _, body := range requestTypes {
		typ := reflect.TypeOf(body)
		for k := 0; ; k++ {
			n := k
			v, path := leaf(typ, "", &n)
			if path == "" {
				break
			}
			checked++
			ptr := reflect.New(typ)
			ptr.Elem().Set(v)
			err := checkBounds(ptr.Interface())
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Code != api.CodeInvalid || ae.Field != path {
				t.Errorf("%s with 70 KiB in %s: %v, want invalid naming %s", typ.Name(), path, err, path)
			}
		}
	}
	if checked < 40 {
		t.Errorf("only %d string fields checked", checked)
	}
	// Lists are bounded too.
	err := checkBounds(&api.HostStatus{Drivers: make([]string, maxItems+1)})
	if ae := (*api.Error)(nil); !errors.As(err, &ae) || ae.Field != "drivers" {
		t.Errorf("a list of %d drivers: %v, want invalid naming drivers", maxItems+1, err)
	}
}

// A project admin cannot grow the store with megabyte descriptions: a
// description past its bound is refused, naming the field, and nothing is
// stored. (150 PATCHes of a megabyte grew etcd's database by 170 MB.)
func TestProjectDescriptionBounded(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	admin := e.as(api.RoleAdmin, "pa")
	big := strings.Repeat("d", 1<<20-100)
	for i := range 5 {
		_, err := admin.UpdateProject(ctx, "pa", api.ProjectUpdate{Description: &big})
		var ae *api.Error
		if statusOfErr(err) != http.StatusBadRequest || !errors.As(err, &ae) || ae.Field != "description" {
			t.Fatalf("PATCH %d with a 1 MB description: %v, want 400 naming description", i, err)
		}
	}
	if p, err := admin.GetProject(ctx, "pa"); err != nil || len(p.Spec.Description) > maxTextBytes {
		t.Errorf("project pa after the refusals: %v, description of %d bytes", err, len(p.Spec.Description))
	}
	ok := strings.Repeat("d", maxTextBytes)
	if _, err := admin.UpdateProject(ctx, "pa", api.ProjectUpdate{Description: &ok}); err != nil {
		t.Errorf("a description of %d bytes: %v", maxTextBytes, err)
	}
	_, err := e.super.CreateProject(ctx, api.ProjectCreate{Name: "big", Description: ok + "x"})
	if statusOfErr(err) != http.StatusBadRequest || !strings.Contains(err.Error(), "description") {
		t.Errorf("creating a project with a %d-byte description: %v, want 400 naming description", maxTextBytes+1, err)
	}
	name := strings.Repeat("n", 4096)
	if _, err := e.super.UpdateUser(ctx, "bob", api.UserUpdate{DisplayName: &name}); statusOfErr(err) != http.StatusBadRequest ||
		!strings.Contains(err.Error(), "displayName") {
		t.Errorf("a display name of 4 KiB: %v, want 400 naming displayName", err)
	}
}
