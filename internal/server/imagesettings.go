package server

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/images"
	"github.com/polyvisor/polyvisor/internal/store"
)

// imageSettingsKey names the one record of image settings.
const imageSettingsKey = "images"

// settingsRecord is an installation setting as stored.
type settingsRecord struct {
	Images  api.ImageSettings `json:"images"`
	Version int64             `json:"-"`
}

// Bounds of the image settings.
const (
	minMaxVirtualBytes    = 1 << 20
	maxMaxVirtualBytes    = 64 << 40
	maxImportsPerProject  = 64
	minConvertTimeoutSecs = 10
	maxConvertTimeoutSecs = 7 * 24 * 3600
	maxFetchAllowEntries  = 256
)

// imageSettings returns the settings in force: the stored ones with the
// defaults for what they leave at zero.
func (s *Server) imageSettings() api.ImageSettings {
	var out api.ImageSettings
	if rec, ok := s.settings.Get(imageSettingsKey); ok {
		out = rec.Images
	}
	if out.MaxVirtualBytes == 0 {
		out.MaxVirtualBytes = api.DefaultImageMaxVirtualBytes
	}
	if out.MaxImportsPerProject == 0 {
		out.MaxImportsPerProject = api.DefaultImageMaxImportsPerProject
	}
	if out.ConvertTimeoutSeconds == 0 {
		out.ConvertTimeoutSeconds = api.DefaultImageConvertTimeoutSecs
	}
	return out
}

func (s *Server) getImageSettings(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.imageSettings())
}

// setImageSettings replaces the image settings; the audit record says
// what they became.
func (s *Server) setImageSettings(w http.ResponseWriter, r *http.Request) {
	var req api.ImageSettings
	if err := decodeJSON(w, r, &req, false); err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := normalizeImageSettings(&req); err != nil {
		s.writeError(w, r, err)
		return
	}
	rq := requestOf(r)
	rq.resource = api.Ref{Kind: "image-settings", Name: imageSettingsKey}
	for range 10 {
		cur, ok := s.settings.Get(imageSettingsKey)
		var err error
		if ok {
			next := store.Clone(cur)
			next.Images = req
			_, err = s.settings.Update(r.Context(), imageSettingsKey, next, cur.Version)
		} else {
			_, err = s.settings.Create(r.Context(), imageSettingsKey, &settingsRecord{Images: req})
		}
		if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrExists) {
			continue
		}
		if err != nil {
			s.writeError(w, r, fmt.Errorf("storing image settings: %w", err))
			return
		}
		set := s.imageSettings()
		rq.message = describeImageSettings(set)
		s.log.Info("image settings changed", "by", rq.id.Name, "settings", rq.message)
		writeJSON(w, http.StatusOK, set)
		return
	}
	s.writeError(w, r, api.Conflict("the image settings are being changed concurrently"))
}

// describeImageSettings writes the settings in one line, for the audit
// log.
func describeImageSettings(set api.ImageSettings) string {
	return fmt.Sprintf("maxVirtualBytes=%d maxImportsPerProject=%d convertTimeoutSeconds=%d fetchAllowNetworks=[%s] fetchAllowHosts=[%s]",
		set.MaxVirtualBytes, set.MaxImportsPerProject, set.ConvertTimeoutSeconds,
		strings.Join(set.FetchAllowNetworks, " "), strings.Join(set.FetchAllowHosts, " "))
}

// normalizeImageSettings checks the settings a superadmin gives, naming
// the field at fault, and writes networks and hosts in canonical form.
func normalizeImageSettings(set *api.ImageSettings) error {
	if v := set.MaxVirtualBytes; v != 0 && (v < minMaxVirtualBytes || v > maxMaxVirtualBytes) {
		return api.Invalid("maxVirtualBytes", "must be from %d (1 MiB) to %d (64 TiB), or 0 for the default, not %d", int64(minMaxVirtualBytes), int64(maxMaxVirtualBytes), v)
	}
	if v := set.MaxImportsPerProject; v < 0 || v > maxImportsPerProject {
		return api.Invalid("maxImportsPerProject", "must be from 1 to %d, or 0 for the default, not %d", maxImportsPerProject, v)
	}
	if v := set.ConvertTimeoutSeconds; v != 0 && (v < minConvertTimeoutSecs || v > maxConvertTimeoutSecs) {
		return api.Invalid("convertTimeoutSeconds", "must be from %d to %d, or 0 for the default, not %d", minConvertTimeoutSecs, maxConvertTimeoutSecs, v)
	}
	if len(set.FetchAllowNetworks) > maxFetchAllowEntries {
		return api.Invalid("fetchAllowNetworks", "at most %d networks, not %d", maxFetchAllowEntries, len(set.FetchAllowNetworks))
	}
	if len(set.FetchAllowHosts) > maxFetchAllowEntries {
		return api.Invalid("fetchAllowHosts", "at most %d hosts, not %d", maxFetchAllowEntries, len(set.FetchAllowHosts))
	}
	nets := make([]string, 0, len(set.FetchAllowNetworks))
	for i, n := range set.FetchAllowNetworks {
		field := fmt.Sprintf("fetchAllowNetworks[%d]", i)
		pfx, err := netip.ParsePrefix(strings.TrimSpace(n))
		if err != nil {
			return api.Invalid(field, "%q is not a network in CIDR form (10.1.0.0/16, fd12::/48)", n)
		}
		if pfx.Bits() == 0 {
			return api.Invalid(field, "%q would allow every address; name the networks to allow", n)
		}
		nets = append(nets, pfx.Masked().String())
	}
	hosts := make([]string, 0, len(set.FetchAllowHosts))
	for i, h := range set.FetchAllowHosts {
		c, err := images.ParseAllowHost(h)
		if err != nil {
			return api.Invalid(fmt.Sprintf("fetchAllowHosts[%d]", i), "%v", err)
		}
		hosts = append(hosts, c)
	}
	slices.Sort(nets)
	slices.Sort(hosts)
	set.FetchAllowNetworks, set.FetchAllowHosts = slices.Compact(nets), slices.Compact(hosts)
	if len(set.FetchAllowNetworks) == 0 {
		set.FetchAllowNetworks = nil
	}
	if len(set.FetchAllowHosts) == 0 {
		set.FetchAllowHosts = nil
	}
	return nil
}
