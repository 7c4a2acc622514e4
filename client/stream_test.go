package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/polyvisor/polyvisor/api"
)

func TestEventsStreamsNDJSON(t *testing.T) {
	release := make(chan struct{})
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/events" || r.URL.Query().Get("types") != "vm,operation" {
			t.Errorf("got %s?%s", r.URL.Path, r.URL.RawQuery)
		}
		if r.Header.Get("Accept") != "application/x-ndjson" {
			t.Errorf("Accept = %q", r.Header.Get("Accept"))
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		_ = enc.Encode(api.Event{Type: api.EventVM, Action: "created", Object: api.Ref{Kind: "vm", Name: "a"}})
		w.(http.Flusher).Flush()
		// The first event must arrive before the stream goes on.
		<-release
		_ = enc.Encode(api.Event{Type: api.EventOperation, Action: "updated", Operation: &api.Operation{ID: "op1"}})
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, errc := c.Events(ctx, api.EventVM, api.EventOperation)

	select {
	case ev := <-events:
		if ev.Type != api.EventVM || ev.Object.Name != "a" {
			t.Errorf("first event = %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event streamed before the stream went on")
	}
	close(release)
	ev := <-events
	if ev.Operation == nil || ev.Operation.ID != "op1" {
		t.Errorf("second event = %+v", ev)
	}
	cancel()
	for range events {
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("stream ended with %v, want context.Canceled", err)
	}
}

func TestStreamOpenErrorAndCleanEnd(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/h2/watch") {
			writeError(w, http.StatusForbidden, &api.Error{Code: api.CodeForbidden, Message: "not your host"})
			return
		}
		if r.URL.Path != "/v1/agent/hosts/h1/watch" {
			t.Errorf("path = %s", r.URL.Path)
		}
		_, _ = io.WriteString(w, `{"type":"vm","vm":{"name":"a","uid":"","version":0,"generation":1,`+
			`"createdAt":"0001-01-01T00:00:00Z","updatedAt":"0001-01-01T00:00:00Z","spec":{},"status":{}}}`+"\n\n")
		_, _ = io.WriteString(w, `{"type":"synced"}`+"\n")
	}))
	ctx := context.Background()
	msgs, errc := c.WatchHost(ctx, "h1")
	var got []string
	for m := range msgs {
		got = append(got, m.Type)
		if m.Type == api.AgentMsgVM && (m.VM == nil || m.VM.Name != "a") {
			t.Errorf("vm message = %+v", m)
		}
	}
	if err := <-errc; err != nil {
		t.Errorf("clean end gave %v", err)
	}
	if strings.Join(got, ",") != "vm,synced" {
		t.Errorf("messages = %v", got)
	}

	msgs, errc = c.WatchHost(ctx, "h2")
	for range msgs {
		t.Error("message on a refused stream")
	}
	if err := <-errc; ErrorCode(err) != api.CodeForbidden {
		t.Errorf("refused stream gave %v", err)
	}
}

func TestAgentRoutes(t *testing.T) {
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		switch r.Method + " " + r.URL.Path {
		case "POST /v1/agent/register":
			if auth != "" {
				t.Errorf("register sent Authorization %q", auth)
			}
			var reg api.AgentRegister
			_ = json.NewDecoder(r.Body).Decode(&reg)
			writeJSON(w, 200, api.AgentCredentials{Host: reg.Host, Token: "host-token", CACert: "PEM"})
		case "PUT /v1/agent/hosts/h1/status":
			var st api.HostStatus
			_ = json.NewDecoder(r.Body).Decode(&st)
			writeJSON(w, 200, api.Host{Meta: api.Meta{Name: "h1"}, Status: st})
		case "PUT /v1/agent/vms/p1/a/status":
			var st api.VMStatus
			_ = json.NewDecoder(r.Body).Decode(&st)
			writeJSON(w, 200, api.VM{Meta: api.Meta{Name: "a"}, Status: st})
		case "POST /v1/agent/vms/p1/a/removed":
			w.WriteHeader(200)
		default:
			t.Errorf("unexpected %s %s", r.Method, r.URL.Path)
			w.WriteHeader(404)
			return
		}
		if r.URL.Path != "/v1/agent/register" && auth != "Bearer secret" {
			t.Errorf("%s sent Authorization %q", r.URL.Path, auth)
		}
	}))
	ctx := context.Background()
	creds, err := c.Register(ctx, api.AgentRegister{JoinToken: "jt", Host: "h1"})
	if err != nil || creds.Token != "host-token" || creds.Host != "h1" {
		t.Fatalf("Register = %+v, %v", creds, err)
	}
	h, err := c.PutHostStatus(ctx, "h1", api.HostStatus{State: api.HostReady, CPUs: 4})
	if err != nil || h.Status.CPUs != 4 {
		t.Fatalf("PutHostStatus = %+v, %v", h, err)
	}
	vm, err := c.PutVMStatus(ctx, "p1/a", api.VMStatus{PowerState: api.PowerRunning, ObservedGeneration: 3})
	if err != nil || vm.Status.ObservedGeneration != 3 {
		t.Fatalf("PutVMStatus = %+v, %v", vm, err)
	}
	if err := c.VMRemoved(ctx, "p1/a"); err != nil {
		t.Fatalf("VMRemoved: %v", err)
	}
}

func TestUploadImageAndContent(t *testing.T) {
	payload := bytes.Repeat([]byte("qcow"), 100_000)
	c := newTestClient(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPost:
			q := r.URL.Query()
			if r.URL.Path != "/v1/images" || q.Get("name") != "deb" || q.Get("kind") != "disk" {
				t.Errorf("got %s?%s", r.URL.Path, r.URL.RawQuery)
			}
			if ct := r.Header.Get("Content-Type"); ct != "application/octet-stream" {
				t.Errorf("Content-Type = %q", ct)
			}
			if r.ContentLength != int64(len(payload)) {
				t.Errorf("Content-Length = %d", r.ContentLength)
			}
			b, _ := io.ReadAll(r.Body)
			if !bytes.Equal(b, payload) {
				t.Errorf("server got %d bytes, want %d", len(b), len(payload))
			}
			writeJSON(w, http.StatusAccepted, api.Operation{ID: "op-img", Kind: api.OpImageImport})
		case http.MethodGet:
			if r.URL.Path != "/v1/images/deb/content" {
				t.Errorf("path = %s", r.URL.Path)
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write(payload)
		}
	}))
	ctx := context.Background()
	var last int64
	calls := 0
	op, err := c.UploadImage(ctx, "deb", api.ImageDisk, bytes.NewReader(payload), int64(len(payload)), func(n int64) {
		if n < last {
			t.Errorf("progress went back from %d to %d", last, n)
		}
		last = n
		calls++
	})
	if err != nil || op.ID != "op-img" {
		t.Fatalf("UploadImage = %+v, %v", op, err)
	}
	if last != int64(len(payload)) || calls < 2 {
		t.Errorf("progress ended at %d after %d calls, want %d", last, calls, len(payload))
	}

	rc, size, err := c.ImageContent(ctx, "deb")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	if !bytes.Equal(b, payload) || (size != -1 && size != int64(len(payload))) {
		t.Errorf("content: %d bytes, size %d", len(b), size)
	}
}

// echoWebsocket accepts a websocket, checks the token and echoes binary
// messages with a prefix.
func echoWebsocket(t *testing.T, wantPath, wantQuery string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != wantPath {
			writeError(w, http.StatusNotFound, api.NotFound("VM", r.URL.Path))
			return
		}
		if r.URL.RawQuery != wantQuery || r.Header.Get("Authorization") != "Bearer secret" {
			t.Errorf("upgrade of %s?%s with Authorization %q", r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"))
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			return
		}
		defer ws.CloseNow()
		for {
			typ, b, err := ws.Read(r.Context())
			if err != nil {
				return
			}
			if typ != websocket.MessageBinary {
				t.Errorf("message type %v, want binary", typ)
			}
			if err := ws.Write(r.Context(), websocket.MessageBinary, append([]byte("echo:"), b...)); err != nil {
				return
			}
		}
	}
}

// roundTrip writes a line on conn and reads the echo.
func roundTrip(t *testing.T, conn io.ReadWriter, msg string) {
	t.Helper()
	if _, err := conn.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	want := "echo:" + msg
	buf := make([]byte, len(want))
	if _, err := io.ReadFull(conn, buf); err != nil {
		t.Fatalf("read: %v", err)
	}
	if string(buf) != want {
		t.Errorf("read %q, want %q", buf, want)
	}
}

func TestConsoleWebsocketRoundTrip(t *testing.T) {
	c := newTestClient(t, echoWebsocket(t, "/v1/vms/a/console", "type=serial"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.Console(ctx, "a", "serial")
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, conn, "login: root\n")
	roundTrip(t, conn, "\x1b[A")
	if err := conn.Close(); err != nil {
		t.Errorf("close: %v", err)
	}

	_, err = c.Console(ctx, "missing", "serial")
	if !IsNotFound(err) || HTTPStatus(err) != http.StatusNotFound {
		t.Errorf("refused upgrade gave %v", err)
	}
}

func TestDialStreamRoundTrip(t *testing.T) {
	c := newTestClient(t, echoWebsocket(t, "/v1/agent/streams/s-1", ""))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := c.DialStream(ctx, "s-1")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip(t, conn, "bytes")
}
