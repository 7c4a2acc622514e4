package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/auth/password"
)

// The API's strict JSON decoding is fuzzed with the bodies of the routes
// anyone with a role may send: VM create, image import by URL, user
// create, token create, password set and login. Seed corpora are in
// testdata/fuzz/<target>; a short run of each target:
//
//	go test -run '^$' -fuzz '^FuzzDecodeVMCreate$' -fuzztime 30s ./internal/server/

// fuzzDecode decodes body as the server decodes a request body into a new
// T, and holds the result to what every handler relies on: no panic; an
// error is an invalid (or too large) *api.Error naming a field; a value
// that decodes encodes to JSON that decodes again to the same value. It
// returns the value, or nil when the body was refused.
func fuzzDecode[T any](t *testing.T, body []byte) *T {
	t.Helper()
	v, err := decodeBody[T](body)
	if err != nil {
		var ae *api.Error
		if !errors.As(err, &ae) {
			t.Fatalf("decoding %q: %T %v, want an *api.Error", body, err, err)
		}
		if (ae.Code != api.CodeInvalid && ae.Code != api.CodeTooLarge) || ae.Message == "" {
			t.Fatalf("decoding %q: %+v, want code invalid or too_large with a message", body, ae)
		}
		if ae.Code == api.CodeInvalid && ae.Field == "" {
			t.Fatalf("decoding %q: %+v names no field", body, ae)
		}
		return nil
	}
	again, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encoding what %q decoded to: %v", body, err)
	}
	v2, err := decodeBody[T](again)
	if err != nil {
		t.Fatalf("%q decoded, but its encoding %s does not: %v", body, again, err)
	}
	if third, _ := json.Marshal(v2); !bytes.Equal(third, again) {
		t.Fatalf("%q does not survive a round trip:\n  %s\n  %s", body, again, third)
	}
	return v
}

// decodeBody runs decodeJSON on body as a request's.
func decodeBody[T any](body []byte) (*T, error) {
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	v := new(T)
	if err := decodeJSON(httptest.NewRecorder(), r, v, false); err != nil {
		return nil, err
	}
	return v, nil
}

// checkAPIError holds an error of a validation to the API's shape.
func checkAPIError(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var ae *api.Error
	if !errors.As(err, &ae) || ae.Code != api.CodeInvalid || ae.Field == "" || ae.Message == "" {
		t.Fatalf("%s: %T %v, want an invalid *api.Error naming a field", what, err, err)
	}
}

func seedFuzz(f *testing.F, seeds ...string) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
}

func FuzzDecodeVMCreate(f *testing.F) {
	seedFuzz(f, `{"name":"web-1","vcpus":2,"memoryMiB":512,"disks":[{"image":"debian-12"}]}`,
		`{"name":"k","vcpus":1,"memoryMiB":64,"boot":{"kernel":"vmlinuz","initrd":"initrd","cmdline":"console=ttyS0"},"disks":[{"name":"data","sizeMiB":10}]}`,
		`{"name":"x","vcpus":1,"memoryMiB":64,"nics":[{"network":"user","mac":"52:54:00:12:34:56"}],"labels":{"tier":"web"},"cloudInit":{"userData":"#cloud-config\n"}}`)
	img := &api.Image{Meta: api.Meta{Name: "debian-12"}, Kind: api.ImageDisk, State: api.ImageReady, Format: "qcow2", VirtualSizeBytes: 1 << 30}
	images := func(name string) (*api.Image, bool) {
		if name == img.Name {
			return img, true
		}
		return nil, false
	}
	limits := hostLimits{maxVCPUs: 64, maxMemoryMiB: 1 << 20, hostExists: func(name string) bool { return name == "h1" }}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := fuzzDecode[api.VMCreate](t, body)
		if req == nil {
			return
		}
		a, err1 := newIdempotentRequest("k", "POST /v1/vms", req)
		b, err2 := newIdempotentRequest("k", "POST /v1/vms", req)
		if err1 != nil || err2 != nil || a != b {
			t.Fatalf("the idempotency hash of %q is not stable: %v %v", body, a, b)
		}
		checkAPIError(t, "validating the vm create", validateVMCreate(req, images, limits))
	})
}

func FuzzDecodeImageCreate(f *testing.F) {
	seedFuzz(f, `{"name":"debian-12","url":"https://cloud.debian.org/images/cloud/bookworm/latest/debian-12-genericcloud-amd64.qcow2"}`,
		`{"name":"vmlinuz","kind":"kernel","url":"http://192.0.2.1/vmlinuz","labels":{"os":"linux"},"public":true}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := fuzzDecode[api.ImageCreate](t, body)
		if req == nil {
			return
		}
		checkAPIError(t, "validating the image name", validateName("name", req.Name))
	})
}

func FuzzDecodeUserCreate(f *testing.F) {
	seedFuzz(f, `{"name":"alice","displayName":"Alice","password":"correct horse battery staple"}`,
		`{"name":"ci","superadmin":true}`, `{"name":"bob","password":"P@ssw0rd2024"}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := fuzzDecode[api.UserCreate](t, body)
		if req == nil {
			return
		}
		checkAPIError(t, "validating the user name", validateName("name", req.Name))
		if err := password.Validate(req.Name, req.Password); err != nil &&
			(!strings.HasSuffix(err.Error(), password.Rule) || !utf8.ValidString(err.Error())) {
			t.Fatalf("password error %q does not state the rule", err)
		}
	})
}

func FuzzDecodeTokenCreate(f *testing.F) {
	seedFuzz(f, `{"name":"ci"}`, `{"name":"ro","project":"web","role":"viewer","expiresInSeconds":3600}`,
		`{"name":"for-bob","user":"bob"}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := fuzzDecode[api.TokenCreate](t, body)
		if req == nil {
			return
		}
		checkAPIError(t, "validating the token name", validateName("name", req.Name))
	})
}

func FuzzDecodePassword(f *testing.F) {
	seedFuzz(f, `{"current":"old passphrase","password":"new passphrase"}`, `{"password":"x"}`,
		`{"user":"alice","password":"a-long-passphrase"}`)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzDecode[api.PasswordSet](t, body)
		fuzzDecode[api.Login](t, body)
	})
}
