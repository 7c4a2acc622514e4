package audit

import (
	"strconv"
	"unicode/utf8"

	"github.com/polyvisor/polyvisor/api"
)

// Bounds of a record's fields. Much of a record comes from the request it
// stands for (its path, the names in it, what the caller typed at login),
// so each field is cut to its bound before the record is written, ending
// with a marker that says how long it was: a flood of long requests costs
// the log no more than one of short ones.
const (
	// MaxNameBytes bounds names: the actor, the object, the project, the
	// address, the action, ids.
	MaxNameBytes = 256
	// MaxPathBytes bounds the request's path.
	MaxPathBytes = 1024
	// MaxMessageBytes bounds the message.
	MaxMessageBytes = 2048
)

// Truncate returns s if it takes at most max bytes, or else its beginning,
// cut on a character boundary, followed by a marker giving its length, the
// whole within max bytes.
func Truncate(s string, max int) string {
	if len(s) <= max {
		return s
	}
	marker := "…[cut: " + strconv.Itoa(len(s)) + " bytes]"
	keep := max - len(marker)
	if keep <= 0 {
		return marker[:min(len(marker), max)]
	}
	for keep > 0 && !utf8.RuneStart(s[keep]) {
		keep--
	}
	return s[:keep] + marker
}

// Bound cuts every free-text field of rec to its bound.
func Bound(rec *api.AuditRecord) {
	for _, f := range []*string{
		&rec.Actor.Kind, &rec.Actor.Name, &rec.Actor.Token, &rec.Remote, &rec.RequestID, &rec.Method,
		&rec.Action, &rec.Project, &rec.Resource.Kind, &rec.Resource.Name, &rec.Resource.Project,
		&rec.Resource.UID, &rec.OperationID, &rec.Outcome,
	} {
		*f = Truncate(*f, MaxNameBytes)
	}
	rec.Path = Truncate(rec.Path, MaxPathBytes)
	rec.Message = Truncate(rec.Message, MaxMessageBytes)
}
