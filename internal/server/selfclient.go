package server

import (
	"context"
	"io"
	"net/http"
	"sync"

	"github.com/polyvisor/polyvisor/client"
)

// selfKey marks a request the server makes of its own API, in process,
// with the name of the part that makes it ("migration").
type selfKey struct{}

// selfName is the user a part of the server acts as on its own API: a
// superadmin whose name no user can have. Its requests are authorized
// and audited like any other.
func selfName(part string) string { return "system:" + part }

// selfClient is a client of this server's API that calls its handler in
// process, as the named part (selfName), acting in project.
func (s *Server) selfClient(part, project string) *client.Client {
	c, err := client.New(client.Config{
		URL: "http://polyvisor.internal", Project: project, UserAgent: "polyvisor-" + part,
		WrapTransport: func(http.RoundTripper) http.RoundTripper { return &handlerTransport{s: s, part: part} },
	})
	if err != nil {
		panic(err) // the URL is constant
	}
	return c
}

// handlerTransport hands a request to the server's handler and streams
// its answer back.
type handlerTransport struct {
	s    *Server
	part string
}

func (t *handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := context.WithValue(req.Context(), selfKey{}, t.part)
	in := req.Clone(ctx)
	in.RequestURI = req.URL.RequestURI()
	// As the unix socket's: a part of the server is not rate limited
	// per address (nor per user: it holds no token).
	in.RemoteAddr = "@"
	if in.Body == nil {
		in.Body = http.NoBody
	}
	pr, pw := io.Pipe()
	w := &pipeResponse{header: http.Header{}, body: pw, started: make(chan struct{})}
	go func() {
		defer func() {
			w.start(http.StatusOK)
			pw.Close()
		}()
		t.s.Handler().ServeHTTP(w, in)
	}()
	select {
	case <-w.started:
	case <-ctx.Done():
		pr.CloseWithError(ctx.Err())
		return nil, ctx.Err()
	}
	return &http.Response{Status: http.StatusText(w.status), StatusCode: w.status, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.header.Clone(), Body: pr, ContentLength: -1, Request: req}, nil
}

// pipeResponse is a ResponseWriter whose body is read through a pipe.
type pipeResponse struct {
	header  http.Header
	body    *io.PipeWriter
	once    sync.Once
	status  int
	started chan struct{}
}

func (w *pipeResponse) Header() http.Header { return w.header }

func (w *pipeResponse) start(status int) {
	w.once.Do(func() {
		w.status = status
		close(w.started)
	})
}

func (w *pipeResponse) WriteHeader(status int) {
	if status >= 100 && status < 200 {
		return
	}
	w.start(status)
}

func (w *pipeResponse) Write(b []byte) (int, error) {
	w.start(http.StatusOK)
	return w.body.Write(b)
}

func (w *pipeResponse) Flush() {}
