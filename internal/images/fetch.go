package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"
)

// DefaultMaxFetchBytes bounds a download unless WithMaxBytes says otherwise.
const DefaultMaxFetchBytes int64 = 64 << 30

// FetchOption configures Fetch.
type FetchOption func(*fetchConfig)

type fetchConfig struct {
	maxBytes int64
	policy   FetchPolicy
	resolver *net.Resolver // nil: the system's
	stall    time.Duration
}

// WithMaxBytes refuses downloads larger than n bytes (n <= 0: no limit).
func WithMaxBytes(n int64) FetchOption {
	return func(c *fetchConfig) { c.maxBytes = n }
}

const maxRedirects = 10

// fetchStall is how long a download may go without receiving a byte.
var fetchStall = 2 * time.Minute

// Fetch downloads rawURL, an http or https URL, to the file dst, and
// returns its size. The body goes to a temporary file next to dst that is
// synced and renamed over dst only when complete (dst may exist, as a
// placeholder made with os.CreateTemp); on failure dst is as it was and no
// temporary file is left. progress, if not nil, is called with
// increasing percentages of the Content-Length (when the server gives one)
// and with 100 at the end.
//
// Fetch connects only where its FetchPolicy allows (by default, public
// addresses), checking the address of every connection it makes, the
// redirects' included. It ignores the proxy environment variables: a
// proxy would connect where the policy cannot see. Credentials in the URL
// (user:password@) are sent as basic authentication to its host and
// appear in no message.
//
// A bad URL, a refused destination, an error status from the server and a
// body over the size limit are *RejectError; network failures and server
// errors are *FetchError. The Error of both is safe to show to whoever
// asked for the download: it names no address, port or status of a
// destination that is not on the public internet. Detail(err) tells the
// whole story, for administrators and the server's log.
func Fetch(ctx context.Context, rawURL, dst string, progress func(pct int), opts ...FetchOption) (int64, error) {
	cfg := fetchConfig{maxBytes: DefaultMaxFetchBytes, stall: fetchStall}
	for _, o := range opts {
		o(&cfg)
	}
	u, err := parseSourceURL(rawURL)
	if err != nil {
		return 0, err
	}
	shown := RedactURL(u)

	// internal: some connection of this download went to an address that
	// is not public (the policy allowed it): its answers are not shown.
	var internal atomic.Bool
	t := &http.Transport{
		Proxy:                 nil,
		DialContext:           guardedDialer(cfg.policy, cfg.resolver, func() { internal.Store(true) }),
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          4,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: time.Minute,
		ExpectContinueTimeout: time.Second,
	}
	defer t.CloseIdleConnections()
	client := &http.Client{Transport: t, CheckRedirect: checkRedirect}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, &FetchError{Msg: fmt.Sprintf("fetching %s: the request could not be made", shown), Err: err}
	}
	// Images are already dense; ask for the bytes as they are, so that
	// Content-Length measures the download.
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("User-Agent", "polyvisor")
	resp, err := client.Do(req)
	if err != nil {
		return 0, requestError(ctx, shown, err)
	}
	defer resp.Body.Close()

	status := func(format string) string {
		if internal.Load() {
			return fmt.Sprintf(format, "an error status")
		}
		return fmt.Sprintf(format, resp.Status)
	}
	switch {
	case resp.StatusCode >= 500:
		return 0, &FetchError{Msg: status("fetching " + shown + ": the server answered %s"), Err: fmt.Errorf("status %s", resp.Status)}
	case resp.StatusCode != http.StatusOK:
		return 0, &RejectError{Msg: status("fetching " + shown + ": the server answered %s"), detail: "status " + resp.Status}
	}
	if cfg.maxBytes > 0 && resp.ContentLength > cfg.maxBytes {
		return 0, &RejectError{Msg: fmt.Sprintf("fetching %s: the image is over the size limit of %d bytes", shown, cfg.maxBytes),
			detail: fmt.Sprintf("Content-Length %d", resp.ContentLength)}
	}

	p := newReporter(progress)
	total := max(resp.ContentLength, 0)
	var n int64
	err = withTemp(dst, true, func(tmp string) error {
		body := &limitReader{r: &stallReader{r: resp.Body, d: cfg.stall, cancel: cancel}, left: cfg.maxBytes}
		var err error
		_, n, err = copyToFile(ctx, tmp, body, total, func(done, total int64) {
			if total > 0 {
				p.set(int(done * 99 / total))
			}
		})
		if body.over {
			return rejectf("fetching %s: the image is over the size limit of %d bytes", shown, cfg.maxBytes)
		}
		if err != nil {
			if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
				return &FetchError{Msg: fmt.Sprintf("fetching %s: no data for %s", shown, cfg.stall), Err: cause}
			}
			if ctx.Err() != nil {
				return fmt.Errorf("fetching %s: %w", shown, ctx.Err())
			}
			return &FetchError{Msg: fmt.Sprintf("fetching %s: the download was cut short", shown), Err: err}
		}
		if resp.ContentLength >= 0 && n != resp.ContentLength {
			return &FetchError{Msg: fmt.Sprintf("fetching %s: the download was cut short", shown),
				Err: fmt.Errorf("got %d bytes of %d", n, resp.ContentLength)}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	p.set(100)
	logger().Info("fetched image", "url", shown, "dst", dst, "size", n)
	return n, nil
}

// requestError sorts a failed request: a refused destination or redirect
// is the URL's fault; the rest is the network's. Neither message names
// what the connection met.
func requestError(ctx context.Context, shown string, err error) error {
	var rej *RejectError
	if errors.As(err, &rej) {
		return rej
	}
	var dest *DestinationError
	if errors.As(err, &dest) {
		return &RejectError{
			Msg: fmt.Sprintf("fetching %s: the server does not fetch from this destination: "+
				"image URLs must lead to public internet addresses (a superadmin can allow networks or hosts)", shown),
			Err: dest, detail: dest.Error(),
		}
	}
	if ctx.Err() != nil {
		return fmt.Errorf("fetching %s: %w", shown, ctx.Err())
	}
	// net/http masks the password of the URL it names, not the user.
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			ue.URL = RedactURL(u)
		}
	}
	return &FetchError{Msg: fmt.Sprintf("fetching %s: could not connect to the server", shown), Err: err}
}

// parseSourceURL accepts absolute http and https URLs with a host.
func parseSourceURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(rawURL))
	if err != nil {
		// url.Error repeats the URL, password included: keep only the cause.
		cause := err
		var uerr *url.Error
		if errors.As(err, &uerr) {
			cause = uerr.Err
		}
		return nil, &RejectError{Msg: fmt.Sprintf("invalid url: %v", cause), Err: err}
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	case "":
		return nil, rejectf("invalid url %q: want an absolute http or https url", RedactURL(u))
	default:
		return nil, rejectf("unsupported url scheme %q: only http and https", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, rejectf("invalid url %q: no host", RedactURL(u))
	}
	return u, nil
}

// RedactURL is u without its user information (user:password@), as it
// may be stored, shown and logged.
func RedactURL(u *url.URL) string {
	c := *u
	c.User = nil
	return c.String()
}

// SourceURL checks rawURL as Fetch would and returns it without its user
// information, as it may be stored and shown, and whether it had any.
func SourceURL(rawURL string) (clean string, hadCredentials bool, err error) {
	u, err := parseSourceURL(rawURL)
	if err != nil {
		return "", false, err
	}
	return RedactURL(u), u.User != nil, nil
}

func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return rejectf("fetching %s: more than %d redirects", RedactURL(via[0].URL), maxRedirects)
	}
	if s := req.URL.Scheme; s != "http" && s != "https" {
		return rejectf("fetching %s: redirected to unsupported scheme %q", RedactURL(via[0].URL), s)
	}
	return nil
}

// errStalled ends a download that received nothing for too long.
var errStalled = errors.New("download stalled")

// stallReader cancels the download when a Read waits longer than d.
type stallReader struct {
	r      io.Reader
	d      time.Duration
	cancel context.CancelCauseFunc
}

func (s *stallReader) Read(p []byte) (int, error) {
	t := time.AfterFunc(s.d, func() { s.cancel(errStalled) })
	defer t.Stop()
	return s.r.Read(p)
}

// limitReader reads at most left bytes (left <= 0: no limit) and notes
// when the source had more.
type limitReader struct {
	r    io.Reader
	left int64
	read int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return l.r.Read(p)
	}
	if l.read >= l.left {
		// Anything more is over the limit.
		var one [1]byte
		n, err := l.r.Read(one[:])
		if n > 0 {
			l.over = true
			return 0, errors.New("over the size limit")
		}
		return 0, err
	}
	p = p[:min(int64(len(p)), l.left-l.read)]
	n, err := l.r.Read(p)
	l.read += int64(n)
	return n, err
}
