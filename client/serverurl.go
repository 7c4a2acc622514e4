package client

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// urlForms says which server addresses New accepts.
const urlForms = "want https://HOST:PORT, HOST:PORT (https is assumed), or unix:///path/to/socket"

// parseServerURL reads the address of a server as people write it: a URL
// ("https://pv.example.com:7443", "unix:///var/lib/polyvisor/polyvisor.sock"),
// an absolute socket path, or a bare HOST:PORT, which is taken as https.
func parseServerURL(s string) (*url.URL, error) {
	raw := strings.TrimSpace(s)
	switch {
	case raw == "":
		return nil, errors.New("no server URL: " + urlForms)
	case strings.HasPrefix(raw, "/"):
		raw = "unix://" + raw
	case !strings.Contains(raw, "://") && !strings.HasPrefix(raw, "unix:"):
		// No scheme: "127.0.0.1:7443", "[::1]:7443" or "pv.example.com:7443"
		// (which url.Parse would read as a scheme and an opaque part).
		host, port, err := net.SplitHostPort(raw)
		if err != nil || host == "" || !validPort(port) || strings.ContainsAny(host, "/?#@ ") {
			return nil, fmt.Errorf("server URL %q: %s%s", s, urlForms, guessURL(raw))
		}
		raw = "https://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("server URL %q: %s", s, urlForms)
	}
	return u, nil
}

// validPort tells whether p is a TCP port number.
func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n > 0 && n < 1<<16
}

// guessURL suggests a URL for an address given without a port, such as
// "pv.example.com".
func guessURL(raw string) string {
	if raw == "" || strings.ContainsAny(raw, ":/?#@ ") {
		return ""
	}
	return fmt.Sprintf(" (did you mean https://%s:7443?)", raw)
}
