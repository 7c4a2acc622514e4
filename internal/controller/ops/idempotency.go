package ops

import "time"

// IdempotencyRecord maps a client's Idempotency-Key to the operation its
// first request made, with the route and a hash of the body of that
// request: a retry must be the same request. Records are kept as long as
// finished operations, and removed with them.
type IdempotencyRecord struct {
	Name        string    `json:"name"`
	Version     int64     `json:"-"`
	OperationID string    `json:"operationId"`
	CreatedAt   time.Time `json:"createdAt"`
	// Route is the first request's method and path pattern, BodyHash the
	// hex SHA-256 of its body as decoded and encoded again (so spacing and
	// the order of fields do not matter). Records written before these
	// were kept have neither, and match any request.
	Route    string `json:"route,omitempty"`
	BodyHash string `json:"bodyHash,omitempty"`
}
