// Package web holds the browser console: the TypeScript app under web/src,
// built by Vite into web/dist, which this package embeds so the server can
// serve it from the one binary.
package web

import (
	"embed"
	"io/fs"
)

//go:embed all:dist
var dist embed.FS

// Dist returns the built app, rooted at its index.html. Built is false
// when the app was not built before the binary (web/dist holds only its
// placeholder).
func Dist() (fsys fs.FS, built bool) {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		return nil, false
	}
	_, err = fs.Stat(sub, "index.html")
	return sub, err == nil
}
