package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultMaxFetchBytes bounds a download unless WithMaxBytes says otherwise.
const DefaultMaxFetchBytes int64 = 64 << 30

// FetchOption configures Fetch.
type FetchOption func(*fetchConfig)

type fetchConfig struct {
	maxBytes int64
	client   *http.Client
}

// WithMaxBytes refuses downloads larger than n bytes (n <= 0: no limit).
func WithMaxBytes(n int64) FetchOption {
	return func(c *fetchConfig) { c.maxBytes = n }
}

// WithHTTPClient makes Fetch use c. Redirects are still limited to http
// and https unless c has its own CheckRedirect.
func WithHTTPClient(c *http.Client) FetchOption {
	return func(cfg *fetchConfig) { cfg.client = c }
}

const maxRedirects = 10

// Fetch downloads rawURL, an http or https URL, to the file dst, and
// returns its size. The body goes to a temporary file next to dst that is
// synced and renamed over dst only when complete (dst may exist, as a
// placeholder made with os.CreateTemp); on failure dst is as it was and no
// temporary file is left. progress, if not nil, is called with
// increasing percentages of the Content-Length (when the server gives one)
// and with 100 at the end.
//
// A bad URL, an error status from the server and a body over the size
// limit are *RejectError; network failures are not.
func Fetch(ctx context.Context, rawURL, dst string, progress func(pct int), opts ...FetchOption) (int64, error) {
	cfg := fetchConfig{maxBytes: DefaultMaxFetchBytes}
	for _, o := range opts {
		o(&cfg)
	}
	u, err := parseSourceURL(rawURL)
	if err != nil {
		return 0, err
	}
	shown := u.Redacted()

	client := &http.Client{}
	if cfg.client != nil {
		c := *cfg.client
		client = &c
	} else {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.ResponseHeaderTimeout = time.Minute
		client.Transport = t
	}
	if client.CheckRedirect == nil {
		client.CheckRedirect = checkRedirect
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return 0, fmt.Errorf("fetching %s: %w", shown, err)
	}
	// Images are already dense; ask for the bytes as they are, so that
	// Content-Length measures the download.
	req.Header.Set("Accept-Encoding", "identity")
	req.Header.Set("User-Agent", "polyvisor")
	resp, err := client.Do(req)
	if err != nil {
		var rej *RejectError
		if errors.As(err, &rej) {
			return 0, rej
		}
		return 0, fmt.Errorf("fetching %s: %w", shown, err)
	}
	defer resp.Body.Close()

	switch {
	case resp.StatusCode >= 500:
		return 0, fmt.Errorf("fetching %s: server answered %s", shown, resp.Status)
	case resp.StatusCode != http.StatusOK:
		return 0, rejectf("fetching %s: server answered %s", shown, resp.Status)
	}
	if cfg.maxBytes > 0 && resp.ContentLength > cfg.maxBytes {
		return 0, rejectf("fetching %s: %d bytes is over the limit of %d", shown, resp.ContentLength, cfg.maxBytes)
	}

	p := newReporter(progress)
	total := max(resp.ContentLength, 0)
	var n int64
	err = withTemp(dst, true, func(tmp string) error {
		body := &limitReader{r: resp.Body, left: cfg.maxBytes}
		var err error
		_, n, err = copyToFile(ctx, tmp, body, total, func(done, total int64) {
			if total > 0 {
				p.set(int(done * 99 / total))
			}
		})
		if body.over {
			return rejectf("fetching %s: body is over the limit of %d bytes", shown, cfg.maxBytes)
		}
		if err != nil {
			return fmt.Errorf("fetching %s: %w", shown, err)
		}
		if resp.ContentLength >= 0 && n != resp.ContentLength {
			return fmt.Errorf("fetching %s: got %d bytes of %d", shown, n, resp.ContentLength)
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
		return nil, rejectf("invalid url %q: want an absolute http or https url", u.Redacted())
	default:
		return nil, rejectf("unsupported url scheme %q: only http and https", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, rejectf("invalid url %q: no host", u.Redacted())
	}
	return u, nil
}

func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return rejectf("fetching %s: more than %d redirects", via[0].URL.Redacted(), maxRedirects)
	}
	if s := req.URL.Scheme; s != "http" && s != "https" {
		return rejectf("fetching %s: redirected to unsupported scheme %q", via[0].URL.Redacted(), s)
	}
	return nil
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
