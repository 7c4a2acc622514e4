package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/internal/store"
)

// maxBodyBytes bounds every JSON request body. Image uploads have their own
// limit.
const maxBodyBytes = 1 << 20

// statusOf maps an error code to its one HTTP status.
var statusOf = map[string]int{
	api.CodeInvalid:         http.StatusBadRequest,
	api.CodeUnauthorized:    http.StatusUnauthorized,
	api.CodeForbidden:       http.StatusForbidden,
	api.CodeNotFound:        http.StatusNotFound,
	api.CodeConflict:        http.StatusConflict,
	api.CodeTooLarge:        http.StatusRequestEntityTooLarge,
	api.CodeUnprocessable:   http.StatusUnprocessableEntity,
	api.CodeTooManyRequests: http.StatusTooManyRequests,
	api.CodeInternal:        http.StatusInternalServerError,
	api.CodeUnavailable:     http.StatusServiceUnavailable,
	api.CodeGone:            http.StatusGone,
	// A full disk makes the server read-only.
	api.CodeInsufficientStorage: http.StatusInsufficientStorage,
}

// toAPIError turns any error into the API's one error shape. Typed errors
// keep their code; store sentinels map to their meaning; anything else is an
// internal error whose detail stays in the log.
func toAPIError(err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return &api.Error{Code: api.CodeTooLarge, Message: fmt.Sprintf("request body is larger than %d bytes", mbe.Limit)}
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrConflict):
		return &api.Error{Code: api.CodeConflict, Message: err.Error()}
	case errors.Is(err, store.ErrNotFound):
		return &api.Error{Code: api.CodeNotFound, Message: err.Error()}
	case errors.Is(err, store.ErrReadOnly):
		return &api.Error{Code: api.CodeInsufficientStorage, Message: err.Error()}
	case store.IsNoSpace(err):
		return &api.Error{Code: api.CodeInsufficientStorage, Message: "the store's database is at its quota; changes are refused until space is reclaimed"}
	case errors.Is(err, store.ErrInvalidContinue):
		return api.Invalid("continue", "invalid continue token")
	case store.IsUnavailable(err):
		return &api.Error{Code: api.CodeUnavailable, Message: "the store is electing a leader or lost its quorum; the change may or may not have been made: repeat the request (a create with the same Idempotency-Key)"}
	}
	return &api.Error{Code: api.CodeInternal, Message: "internal error"}
}

func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := toAPIError(err)
	status, ok := statusOf[ae.Code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if ae.Code == api.CodeUnavailable && w.Header().Get("Retry-After") == "" {
		w.Header().Set("Retry-After", "1")
	}
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeJSON(w, status, api.ErrorBody{Error: ae})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	if err := enc.Encode(v); err != nil {
		slog.Debug("writing response", "err", err)
	}
}

// writeOperation answers 202 with an operation and its location.
func writeOperation(w http.ResponseWriter, op *api.Operation) {
	w.Header().Set("Location", "/v1/operations/"+op.ID)
	writeJSON(w, http.StatusAccepted, op)
}

// decodeJSON reads a JSON body strictly: bounded size, no unknown fields, a
// single value, every string, list and map within its bound (checkBounds).
// An empty body is an error unless optional is set.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return api.Invalid("body", "request body is empty")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if dec.More() {
		return api.Invalid("body", "request body holds more than one JSON value")
	}
	return checkBounds(v)
}

// jsonError names what is wrong with a body that does not decode.
func jsonError(err error) *api.Error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return api.Invalid("body", "malformed JSON at byte %d: %v", se.Offset, se)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "body"
		}
		return api.Invalid(field, "must be %s, not JSON %s", te.Type, te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		if name == "" {
			return api.Invalid("body", "unknown field \"\"")
		}
		return api.Invalid(name, "unknown field %q", name)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return api.Invalid("body", "malformed JSON: unexpected end of input")
	}
	return api.Invalid("body", "malformed JSON: %v", err)
}

// providerMatches applies the ?provider= filter to an object's provider.
func providerMatches(filter string, ref *api.ProviderRef) bool {
	switch filter {
	case "":
		return true
	case "none":
		return ref == nil
	}
	return ref != nil && ref.Name == filter
}

// listOptions parses the common list query parameters.
func listOptions(r *http.Request) (api.ListOptions, error) {
	q := r.URL.Query()
	opts := api.ListOptions{
		Continue: q.Get("continue"),
		Selector: q.Get("selector"),
		Host:     q.Get("host"),
		State:    q.Get("state"),
		Provider: q.Get("provider"),
		Limit:    100,
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return opts, api.Invalid("limit", "must be an integer from 1 to 1000, not %q", v)
		}
		opts.Limit = n
	}
	return opts, nil
}
