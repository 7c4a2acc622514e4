package password

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Limits on new passwords. The upper one bounds the work a login request
// can cause and keeps passwords to something a person types or pastes.
const (
	MinLength = 8   // characters
	MaxLength = 256 // bytes
)

var (
	errTooShort = fmt.Errorf("password must be at least %d characters", MinLength)
	errTooLong  = fmt.Errorf("password must be at most %d bytes", MaxLength)
	errEncoding = errors.New("password must be valid UTF-8")
)

// Validate checks a new password against the policy: at least MinLength
// characters and at most MaxLength bytes of UTF-8. The error names the
// rule broken, fit to show the user.
func Validate(password string) error {
	switch {
	case len(password) > MaxLength:
		return errTooLong
	case !utf8.ValidString(password):
		return errEncoding
	case utf8.RuneCountInString(password) < MinLength:
		return errTooShort
	}
	return nil
}
