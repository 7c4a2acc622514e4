package password

import (
	"bufio"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits on new passwords. The upper one bounds the work a login request
// can cause and keeps passwords to something a person types or pastes.
const (
	MinLength   = 8   // characters
	MaxLength   = 256 // bytes
	MinDistinct = 4   // different characters
)

// Rule says in a sentence what a new password must be; every error of
// Validate ends with it.
var Rule = fmt.Sprintf("a password needs at least %d characters (at most %d bytes), at least %d different ones, "+
	"must not be built on the user name, and must not be a common password", MinLength, MaxLength, MinDistinct)

var (
	errTooShort = ruleError(fmt.Sprintf("password must be at least %d characters", MinLength))
	errTooLong  = ruleError(fmt.Sprintf("password must be at most %d bytes", MaxLength))
	errEncoding = ruleError("password must be valid UTF-8")
	errRepeats  = ruleError(fmt.Sprintf("password must hold at least %d different characters", MinDistinct))
	errUserName = ruleError(fmt.Sprintf("password must not be built on the user name: with the name taken out, at least %d characters must remain", MinLength))
	errCommon   = ruleError("password is too common: it is one of the most used passwords or keyboard runs, or one with only digits or symbols around it")
)

func ruleError(what string) error { return errors.New(what + "; " + Rule) }

//go:embed common.txt
var commonText string

// common holds the most used passwords, and the words they are built on.
var common = func() map[string]bool {
	m := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(commonText))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" && !strings.HasPrefix(l, "#") {
			m[l] = true
		}
	}
	return m
}()

// runs are keyboard and alphabet runs; a password that is part of one,
// forwards or backwards, is refused as common.
var runs = []string{
	"01234567890123456789", "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
	"qwertyuiopasdfghjklzxcvbnm", "qwertzuiopasdfghjklyxcvbnm", "azertyuiopqsdfghjklmwxcvbn",
	"1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p", "!@#$%^&*()_+",
}

// lookAlikes undoes the usual swaps of letters for digits and symbols.
var lookAlikes = strings.NewReplacer("0", "o", "1", "i", "3", "e", "4", "a", "5", "s", "7", "t", "@", "a", "$", "s", "!", "i")

// Validate checks a new password for a user against the policy (see Rule).
// The error names the rule broken and states the whole rule, fit to show
// the user. user may be empty when there is none yet.
func Validate(user, password string) error {
	switch {
	case len(password) > MaxLength:
		return errTooLong
	case !utf8.ValidString(password):
		return errEncoding
	case utf8.RuneCountInString(password) < MinLength:
		return errTooShort
	case distinct(password) < MinDistinct:
		return errRepeats
	case builtOnName(user, password):
		return errUserName
	case isCommon(password):
		return errCommon
	}
	return nil
}

func distinct(s string) int {
	seen := map[rune]bool{}
	for _, r := range strings.ToLower(s) {
		seen[r] = true
	}
	return len(seen)
}

// builtOnName tells whether password is the user name (or it reversed),
// with fewer than MinLength characters beside it.
func builtOnName(user, password string) bool {
	user = strings.ToLower(strings.TrimSpace(user))
	if user == "" {
		return false
	}
	pw := strings.ToLower(password)
	for _, name := range []string{user, reverse(user)} {
		if core(pw) == name || lookAlikes.Replace(core(pw)) == name {
			return true
		}
		if utf8.RuneCountInString(name) < 3 {
			continue
		}
		for _, p := range []string{pw, lookAlikes.Replace(pw)} {
			if strings.Contains(p, name) && utf8.RuneCountInString(strings.ReplaceAll(p, name, "")) < MinLength {
				return true
			}
		}
	}
	return false
}

// isCommon tells whether password is a common one, a keyboard run, or
// one of these with digits or symbols around it or look-alike swaps.
func isCommon(password string) bool {
	pw := strings.ToLower(password)
	for _, cand := range []string{pw, core(pw), lookAlikes.Replace(core(pw)), lookAlikes.Replace(pw)} {
		if cand != "" && common[cand] {
			return true
		}
	}
	for _, r := range runs {
		if strings.Contains(r, pw) || strings.Contains(reverse(r), pw) {
			return true
		}
	}
	return false
}

// core strips the digits, symbols and spaces around a password's letters:
// "Password123!" becomes "password". Look-alike digits inside stay.
func core(pw string) string {
	return strings.TrimFunc(pw, func(r rune) bool { return !unicode.IsLetter(r) })
}

func reverse(s string) string {
	r := []rune(s)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return string(r)
}
