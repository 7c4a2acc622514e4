package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/polyvisor/polyvisor/api"
)

// StatusError is the error of an answer outside 2xx: the HTTP status and
// the server's error. It unwraps to the *api.Error, so both
//
//	var se *client.StatusError; errors.As(err, &se)
//	var ae *api.Error;          errors.As(err, &ae)
//
// work.
type StatusError struct {
	// Status is the HTTP status code of the answer.
	Status int
	// Err is the error the server sent, or one made from the status when
	// the answer held none (a proxy's error page).
	Err *api.Error
}

// Error returns the server's message, naming the field of an invalid input.
func (e *StatusError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("server answered %d %s", e.Status, http.StatusText(e.Status))
	}
	return e.Err.Error()
}

// Unwrap returns the server's *api.Error.
func (e *StatusError) Unwrap() error {
	if e.Err == nil {
		return nil
	}
	return e.Err
}

// codeForStatus returns the error code the API uses for an HTTP status.
func codeForStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return api.CodeInvalid
	case http.StatusUnauthorized:
		return api.CodeUnauthorized
	case http.StatusForbidden:
		return api.CodeForbidden
	case http.StatusNotFound:
		return api.CodeNotFound
	case http.StatusConflict:
		return api.CodeConflict
	case http.StatusRequestEntityTooLarge:
		return api.CodeTooLarge
	case http.StatusUnprocessableEntity:
		return api.CodeUnprocessable
	case http.StatusServiceUnavailable:
		return api.CodeUnavailable
	case http.StatusInsufficientStorage:
		return api.CodeInsufficientStorage
	case http.StatusGone:
		return api.CodeGone
	default:
		return api.CodeInternal
	}
}

// decodeError reads an error answer. It does not close the body.
func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var body api.ErrorBody
	if err := json.Unmarshal(b, &body); err == nil && body.Error != nil && body.Error.Message != "" {
		if body.Error.Code == "" {
			body.Error.Code = codeForStatus(resp.StatusCode)
		}
		return &StatusError{Status: resp.StatusCode, Err: body.Error}
	}
	msg := strings.TrimSpace(string(b))
	if len(msg) > 200 || strings.ContainsAny(msg, "<\x00") || msg == "" {
		msg = fmt.Sprintf("server answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	return &StatusError{
		Status: resp.StatusCode,
		Err:    &api.Error{Code: codeForStatus(resp.StatusCode), Message: msg},
	}
}

// ErrorCode returns the API error code carried by err ("not_found"), or ""
// when err holds no *api.Error.
func ErrorCode(err error) string {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae.Code
	}
	return ""
}

// HTTPStatus returns the HTTP status carried by err, or 0 when err is not
// an answer of the server.
func HTTPStatus(err error) int {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status
	}
	return 0
}

// IsNotFound tells whether err is the server's not_found error.
func IsNotFound(err error) bool { return ErrorCode(err) == api.CodeNotFound }

// IsConflict tells whether err is the server's conflict error.
func IsConflict(err error) bool { return ErrorCode(err) == api.CodeConflict }

// NoAnswerError is the error of a request that got no answer: no server
// could be connected to, or the connection broke before the answer.
type NoAnswerError struct {
	Method, Path string
	Err          error
}

func (e *NoAnswerError) Error() string { return fmt.Sprintf("%s %s: %v", e.Method, e.Path, e.Err) }
func (e *NoAnswerError) Unwrap() error { return e.Err }

// IsUnavailable tells whether err says nothing of the request itself,
// only that the control plane could not take it now: the server answered
// unavailable (503: its store is electing a leader or it is shutting
// down), or the request got no answer. The same request may work later
// or through another server.
func IsUnavailable(err error) bool {
	var na *NoAnswerError
	return errors.As(err, &na) || ErrorCode(err) == api.CodeUnavailable
}

// OperationError returns nil for a succeeded operation and an error for a
// failed or cancelled one: the operation's own *api.Error when it has one.
// It returns nil for an operation that is not done.
func OperationError(op *api.Operation) error {
	switch op.Status {
	case api.OpFailed, api.OpCancelled:
	default:
		return nil
	}
	if op.Error != nil {
		return fmt.Errorf("operation %s (%s %s/%s) %s: %w", op.ID, op.Kind, op.Target.Kind, op.Target.Name, op.Status, op.Error)
	}
	msg := op.Message
	if msg == "" {
		msg = "no reason given"
	}
	return fmt.Errorf("operation %s (%s %s/%s) %s: %s", op.ID, op.Kind, op.Target.Kind, op.Target.Name, op.Status, msg)
}
