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
	admit    func(contentLength int64) (Admission, error)
}

// WithMaxBytes refuses downloads larger than n bytes (n <= 0: no limit).
func WithMaxBytes(n int64) FetchOption {
	return func(c *fetchConfig) { c.maxBytes = n }
}

// Admission is what a WithAdmit function lets a download take.
type Admission struct {
	// Limit is the most bytes the body may have, if less than
	// WithMaxBytes says; 0 or less refuses the download.
	Limit int64
	// Over is the error Fetch fails with when the announced length or
	// the body goes past Limit; nil for a *RejectError.
	Over error
	// Received, if not nil, counts the bytes of the body as they come.
	Received *atomic.Int64
}

// WithAdmit has admit decide, once the response's headers are in and
// before any of its body is read, how much of it to take: contentLength
// is the length the server announced, -1 when it did not. An error from
// admit fails the download as it is, with nothing written.
func WithAdmit(admit func(contentLength int64) (Admission, error)) FetchOption {
	return func(c *fetchConfig) { c.admit = admit }
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
// addresses that are not the server's own), checking the address of every
// connection it makes, the redirects' included. It ignores the proxy
// environment variables: a proxy would connect where the policy cannot
// see. Credentials in the URL (user:password@) are sent as basic
// authentication to its host; they and the values of the query (the
// signature of a pre-signed URL, a private token) appear in no message
// (see RedactURL).
//
// A bad URL, an error status from the server and a body over the size
// limit are *RejectError; network failures, refused destinations and
// server errors are *FetchError. The Error of both is safe to show to
// whoever asked for the download: it names no address, port or status of
// a destination that is not on the public internet, and a destination
// the policy refuses fails with the same error as one that does not
// answer or a name that does not resolve, so that neither names nor ports
// tell anything of the server's network.
// Detail(err) tells the whole story, for administrators and the server's
// log.
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
	var adm Admission
	if cfg.admit != nil {
		if adm, err = cfg.admit(resp.ContentLength); err != nil {
			return 0, err
		}
		switch {
		case adm.Limit <= 0:
			return 0, overLimit(adm, shown, 0)
		case cfg.maxBytes <= 0 || adm.Limit < cfg.maxBytes:
			cfg.maxBytes = adm.Limit
		default:
			adm.Over = nil // the limit is WithMaxBytes's
		}
	}
	if cfg.maxBytes > 0 && resp.ContentLength > cfg.maxBytes {
		if adm.Over != nil {
			return 0, adm.Over
		}
		return 0, &RejectError{Msg: fmt.Sprintf("fetching %s: the image is over the size limit of %d bytes", shown, cfg.maxBytes),
			detail: fmt.Sprintf("Content-Length %d", resp.ContentLength)}
	}

	p := newReporter(progress)
	total := max(resp.ContentLength, 0)
	var n int64
	err = withTemp(dst, true, func(tmp string) error {
		body := &limitReader{r: &stallReader{r: resp.Body, d: cfg.stall, cancel: cancel}, left: cfg.maxBytes, count: adm.Received}
		var err error
		_, n, err = copyToFile(ctx, tmp, body, total, func(done, total int64) {
			if total > 0 {
				p.set(int(done * 99 / total))
			}
		})
		if body.over {
			return overLimit(adm, shown, cfg.maxBytes)
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
	// net/http masks the password of the URL it names, not the user nor
	// the query.
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			ue.URL = RedactURL(u)
		} else {
			ue.URL = "(the url)"
		}
	}
	if ctx.Err() != nil && !errors.As(err, new(*DestinationError)) {
		return fmt.Errorf("fetching %s: %w", shown, ctx.Err())
	}
	// A refused destination fails as a connection that failed: whether a
	// name leads to an internal address, or a port of one is open, is not
	// told (Detail has the cause).
	return &FetchError{Msg: unreachable(shown), Err: err}
}

// unreachable is the message of a download that could not connect, or
// that the policy did not let connect.
func unreachable(shown string) string {
	return fmt.Sprintf("fetching %s: could not connect, or the server does not fetch from there: "+
		"image URLs must lead to public internet addresses that answer (a superadmin can allow networks or hosts)", shown)
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

// Redacted replaces each value of a URL's query in RedactURL.
const Redacted = "REDACTED"

// RedactURL is u as it may be stored, shown, logged and audited: without
// its user information (user:password@) and its fragment, and with the
// value of every query parameter replaced by Redacted (a parameter
// without a value is replaced whole). Pre-signed URLs carry their
// signature (X-Amz-Signature, sig, Signature) and services their tokens
// (private_token, access_token) in the query; the names of the
// parameters stay, to tell what the URL was.
func RedactURL(u *url.URL) string {
	c := *u
	c.User = nil
	c.Fragment, c.RawFragment = "", ""
	c.ForceQuery = false
	if c.RawQuery != "" {
		parts := strings.FieldsFunc(c.RawQuery, func(r rune) bool { return r == '&' || r == ';' })
		for i, p := range parts {
			if k, _, ok := strings.Cut(p, "="); ok && k != "" {
				parts[i] = k + "=" + Redacted
			} else {
				parts[i] = Redacted
			}
		}
		c.RawQuery = strings.Join(parts, "&")
	}
	return c.String()
}

// SourceURL checks rawURL as Fetch would and returns it as it may be
// stored and shown (RedactURL), and whether that left anything out.
func SourceURL(rawURL string) (clean string, redacted bool, err error) {
	u, err := parseSourceURL(rawURL)
	if err != nil {
		return "", false, err
	}
	clean = RedactURL(u)
	return clean, clean != u.String(), nil
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

// overLimit is the error of a download over its limit.
func overLimit(adm Admission, shown string, limit int64) error {
	if adm.Over != nil {
		return adm.Over
	}
	return rejectf("fetching %s: the image is over the size limit of %d bytes", shown, limit)
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
// when the source had more; count, if not nil, adds up what it read.
type limitReader struct {
	r     io.Reader
	left  int64
	read  int64
	over  bool
	count *atomic.Int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.count != nil {
		n, err := l.limited(p)
		l.count.Add(int64(n))
		return n, err
	}
	return l.limited(p)
}

func (l *limitReader) limited(p []byte) (int, error) {
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
