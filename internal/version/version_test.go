package version

import (
	"runtime"
	"testing"
)

func TestGet(t *testing.T) {
	v := Get()
	if v.Version != Version || v.GoVersion != runtime.Version() || v.Platform != runtime.GOOS+"/"+runtime.GOARCH {
		t.Errorf("Get() = %+v", v)
	}
	old := Commit
	defer func() { Commit = old }()
	Commit = "0123abc"
	if got := Get().Commit; got != "0123abc" {
		t.Errorf("Commit set at build time: Get().Commit = %q", got)
	}
}
