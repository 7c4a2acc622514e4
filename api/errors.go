package api

import "fmt"

// Error codes. Each maps to exactly one HTTP status.
const (
	CodeInvalid         = "invalid"           // 400: a field of the request is wrong
	CodeUnauthorized    = "unauthorized"      // 401: no or bad credentials
	CodeForbidden       = "forbidden"         // 403: authenticated but not allowed
	CodeNotFound        = "not_found"         // 404
	CodeConflict        = "conflict"          // 409: name taken, stale version, object busy
	CodeTooLarge        = "too_large"         // 413: request body over the limit
	CodeUnprocessable   = "unprocessable"     // 422: valid, but cannot be met (no host has room, over quota)
	CodeTooManyRequests = "too_many_requests" // 429: rate limited; see Retry-After
	CodeInternal        = "internal"          // 500
	CodeUnavailable     = "unavailable"       // 503
	// CodeGone (410): what was asked for is no longer kept, such as the
	// events after a revision etcd has compacted away.
	CodeGone = "gone"
	// CodeInsufficientStorage (507): the server is read-only: a disk it
	// writes to is full, or its store's database is at its quota.
	CodeInsufficientStorage = "insufficient_storage"
)

// Error is the one error shape of the API: {"error": {...}}.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Field names the offending request field for invalid errors, in JSON
	// path form ("spec.disks[0].image").
	Field   string            `json:"field,omitempty"`
	Details map[string]string `json:"details,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" && e.Code == CodeInvalid {
		return fmt.Sprintf("%s: %s", e.Field, e.Message)
	}
	return e.Message
}

// ErrorBody is the JSON envelope of an error response.
type ErrorBody struct {
	Error *Error `json:"error"`
}

// Invalid returns a 400 error naming the field.
func Invalid(field, format string, args ...any) *Error {
	return &Error{Code: CodeInvalid, Field: field, Message: fmt.Sprintf(format, args...)}
}

// NotFound returns a 404 error.
func NotFound(kind, name string) *Error {
	return &Error{Code: CodeNotFound, Message: fmt.Sprintf("%s %q not found", kind, name)}
}

// Conflict returns a 409 error.
func Conflict(format string, args ...any) *Error {
	return &Error{Code: CodeConflict, Message: fmt.Sprintf(format, args...)}
}

// Unprocessable returns a 422 error.
func Unprocessable(format string, args ...any) *Error {
	return &Error{Code: CodeUnprocessable, Message: fmt.Sprintf(format, args...)}
}
