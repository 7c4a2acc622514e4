package cli

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/polyvisor/polyvisor/api"
)

// TestImageSetCommand: image set sends the visibility to the image of the
// project in force, and wants exactly one of --public and --private.
func TestImageSetCommand(t *testing.T) {
	isolate(t)
	f := newFake(t)
	var got []api.ImageUpdate
	f.HandleFunc("PATCH /v1/images/{name}", func(w http.ResponseWriter, r *http.Request) {
		var u api.ImageUpdate
		_ = json.NewDecoder(r.Body).Decode(&u)
		got = append(got, u)
		project := r.URL.Query().Get("project")
		if project == "" {
			project = api.DefaultProject // as the server does
		}
		reply(w, 200, api.Image{Meta: api.Meta{Name: r.PathValue("name"), Project: project}, Public: *u.Public})
	})
	out, errOut, code := cli(t, "", "--server", f.srv.URL, "image", "set", "tiny-disk", "--public")
	if code != 0 || !strings.Contains(out, "image default/tiny-disk is now public") || len(got) != 1 || !*got[0].Public {
		t.Fatalf("image set --public: exit %d, sent %+v: %s%s", code, got, out, errOut)
	}
	out, _, code = cli(t, "", "--server", f.srv.URL, "image", "set", "golden", "--private", "--project", "web")
	if code != 0 || !strings.Contains(out, "image web/golden is now private") || *got[1].Public {
		t.Fatalf("image set --private: exit %d: %s", code, out)
	}
	if !slices.Contains(f.requests(), "PATCH /v1/images/golden?project=web") {
		t.Errorf("requests: %v", f.requests())
	}
	for _, args := range [][]string{{"x"}, {"x", "--public", "--private"}} {
		if _, errOut, code := cli(t, "", append([]string{"--server", f.srv.URL, "image", "set"}, args...)...); code != ExitUsage || !strings.Contains(errOut, "--public or --private") {
			t.Errorf("image set %v: exit %d: %s", args, code, errOut)
		}
	}
}

// TestImageSettingsCommand: settings set changes what its flags name and
// keeps the rest; "" empties a list; a refused field is named by its
// flag.
func TestImageSettingsCommand(t *testing.T) {
	isolate(t)
	f := newFake(t)
	cur := api.ImageSettings{MaxVirtualBytes: 256 << 30, MaxImportsPerProject: 2, ConvertTimeoutSeconds: 3600,
		FetchAllowNetworks: []string{"10.0.0.0/8"}, FetchAllowHosts: []string{"mirror.internal"}}
	var put []api.ImageSettings
	f.HandleFunc("GET /v1/image-settings", func(w http.ResponseWriter, r *http.Request) { reply(w, 200, cur) })
	f.HandleFunc("PUT /v1/image-settings", func(w http.ResponseWriter, r *http.Request) {
		var s api.ImageSettings
		_ = json.NewDecoder(r.Body).Decode(&s)
		put = append(put, s)
		if len(s.FetchAllowNetworks) > 0 && s.FetchAllowNetworks[0] == "bad" {
			reply(w, 400, api.ErrorBody{Error: api.Invalid("fetchAllowNetworks[0]", "%q is not a network in CIDR form", "bad")})
			return
		}
		reply(w, 200, s)
	})
	out, errOut, code := cli(t, "", "--server", f.srv.URL, "image", "settings", "set", "--max-virtual-size", "512G", "--fetch-allow-hosts", "")
	if code != 0 || len(put) != 1 {
		t.Fatalf("settings set: exit %d: %s%s", code, out, errOut)
	}
	want := cur
	want.MaxVirtualBytes, want.FetchAllowHosts = 512<<30, nil
	if s := put[0]; s.MaxVirtualBytes != want.MaxVirtualBytes || s.MaxImportsPerProject != 2 || s.ConvertTimeoutSeconds != 3600 ||
		!slices.Equal(s.FetchAllowNetworks, want.FetchAllowNetworks) || len(s.FetchAllowHosts) != 0 {
		t.Errorf("sent %+v, want %+v", s, want)
	}
	if !strings.Contains(out, "512.0 GiB") || !strings.Contains(out, "10.0.0.0/8") || !strings.Contains(out, "none (public internet addresses only)") {
		t.Errorf("settings set printed:\n%s", out)
	}
	_, errOut, code = cli(t, "", "--server", f.srv.URL, "image", "settings", "set", "--fetch-allow-networks", "bad")
	if code == 0 || !strings.Contains(errOut, "--fetch-allow-networks: \"bad\" is not a network") {
		t.Errorf("a refused network: exit %d: %s", code, errOut)
	}
	if _, errOut, code := cli(t, "", "--server", f.srv.URL, "image", "settings", "set"); code != ExitUsage || !strings.Contains(errOut, "give at least one") {
		t.Errorf("settings set without flags: exit %d: %s", code, errOut)
	}
	out, _, code = cli(t, "", "--server", f.srv.URL, "image", "settings", "show")
	if code != 0 || !strings.Contains(out, "Imports at once per project:") || !strings.Contains(out, "1h0m0s") {
		t.Errorf("settings show:\n%s", out)
	}
}

// TestQuotaImageStorageFlag: quota set --image-storage sets the image
// storage limit, --unset image-storage lifts it.
func TestQuotaImageStorageFlag(t *testing.T) {
	got, err := applyQuotaChanges(api.Quota{}, quotaChanges{ImageStorageMiB: ptr(100 << 10)})
	if err != nil || got.ImageStorageMiB == nil || *got.ImageStorageMiB != 100<<10 {
		t.Fatalf("--image-storage 100G: %+v %v", got, err)
	}
	got, err = applyQuotaChanges(got, quotaChanges{Unset: []string{"image-storage"}})
	if err != nil || got.ImageStorageMiB != nil {
		t.Fatalf("--unset image-storage: %+v %v", got, err)
	}
}
