package api

// Version describes a Polyvisor build: GET /v1/version answers the
// server's.
type Version struct {
	Version string `json:"version"`
	// Commit is the source revision, when the build recorded one.
	Commit    string `json:"commit,omitempty"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"` // GOOS/GOARCH
}
