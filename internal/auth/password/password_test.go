package password

import (
	"crypto/rand"
	"runtime"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	enc, err := Hash("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(enc, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Errorf("Hash = %q, want the argon2id PHC prefix with default parameters", enc)
	}
	ok, err := Verify("correct horse battery staple", enc)
	if err != nil || !ok {
		t.Errorf("Verify(right password) = %v, %v; want true, nil", ok, err)
	}
	ok, err = Verify("correct horse battery stapler", enc)
	if err != nil || ok {
		t.Errorf("Verify(wrong password) = %v, %v; want false, nil", ok, err)
	}
}

func TestSalted(t *testing.T) {
	a, err := Hash("same password")
	if err != nil {
		t.Fatal(err)
	}
	b, err := Hash("same password")
	if err != nil {
		t.Fatal(err)
	}
	if a == b {
		t.Errorf("two hashes of one password are equal: %q", a)
	}
}

func TestOtherParams(t *testing.T) {
	salt := make([]byte, saltLen)
	rand.Read(salt)
	h := phc{params: params{memory: 8192, time: 1, threads: 2}, salt: salt}
	h.key = h.derive("hunter22", 24)
	enc := h.String()
	if !strings.Contains(enc, "$m=8192,t=1,p=2$") {
		t.Fatalf("encoded = %q", enc)
	}
	got, err := parse(enc)
	if err != nil {
		t.Fatal(err)
	}
	if got.params != h.params || len(got.key) != 24 {
		t.Errorf("parse = %+v, key %d bytes; want %+v, 24 bytes", got.params, len(got.key), h.params)
	}
	if ok, err := Verify("hunter22", enc); err != nil || !ok {
		t.Errorf("Verify = %v, %v; want true, nil", ok, err)
	}
	if ok, err := Verify("hunter23", enc); err != nil || ok {
		t.Errorf("Verify(wrong) = %v, %v; want false, nil", ok, err)
	}
}

func TestMalformed(t *testing.T) {
	const salt = "c29tZXNhbHRzb21lc2FsdA"                     // 16 bytes
	const key = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE" // 32 bytes
	good := "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key
	if _, err := parse(good); err != nil {
		t.Fatalf("parse(good) = %v", err)
	}
	for _, enc := range []string{
		"",
		"plaintext",
		"$argon2id$v=19$m=19456,t=2,p=1$" + salt,
		"argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key + "$",
		"$argon2i$v=19$m=19456,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=16$m=19456,t=2,p=1$" + salt + "$" + key,
		"$argon2id$m=19456,t=2,p=1$" + salt + "$" + key + "$x",
		"$argon2id$v=19$t=2,m=19456,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=2$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=2,p=1,x=1$" + salt + "$" + key,
		"$argon2id$v=19$m=-1,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=abc,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=2097152,t=2,p=1$" + salt + "$" + key, // 2 GiB
		"$argon2id$v=19$m=19456,t=11,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=0,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=2,p=0$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=2,p=255$" + salt + "$" + key,
		"$argon2id$v=19$m=4,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=2,p=1$" + salt + "==$" + key,
		"$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$not base64!",
		"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$" + key,     // 4-byte salt
		"$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$YWFh", // 3-byte hash
	} {
		ok, err := Verify("whatever", enc)
		if err == nil || ok {
			t.Errorf("Verify(%q) = %v, %v; want false and an error", enc, ok, err)
		}
	}
}

// TestVerifyDummyDoesVerifysWork: an unknown user (VerifyDummy) costs
// what a wrong password (Verify) does. Not timed, which a shared machine
// would blur (BenchmarkVerify and BenchmarkVerifyDummy time them): the
// dummy hash has Hash's parameters and key length, and a call allocates
// as much as a Verify, argon2id's memory cost being its work.
func TestVerifyDummyDoesVerifysWork(t *testing.T) {
	enc, err := Hash("the real password")
	if err != nil {
		t.Fatal(err)
	}
	VerifyDummy("warm up") // computes the dummy hash
	stored, err := parse(enc)
	if err != nil {
		t.Fatal(err)
	}
	d, err := parse(dummy.String())
	if err != nil {
		t.Fatal(err)
	}
	if d.params != stored.params || len(d.key) != len(stored.key) || len(d.salt) != len(stored.salt) {
		t.Errorf("the dummy hash has %+v, a %d-byte key and salt %d; Hash makes %+v, %d and %d",
			d.params, len(d.key), len(d.salt), stored.params, len(stored.key), len(stored.salt))
	}
	allocated := func(f func()) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		f()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	verifyBytes := allocated(func() { Verify("a wrong password", enc) })
	dummyBytes := allocated(func() { VerifyDummy("a wrong password") })
	if verifyBytes < defaultMemory*1024 || dummyBytes < verifyBytes*9/10 || dummyBytes > verifyBytes*11/10 {
		t.Errorf("Verify allocated %d bytes and VerifyDummy %d; want both at least argon2id's %d KiB, within 10%% of each other",
			verifyBytes, dummyBytes, defaultMemory)
	}
}

func BenchmarkVerify(b *testing.B) {
	enc, err := Hash("the real password")
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		Verify("a wrong password", enc)
	}
}

func BenchmarkVerifyDummy(b *testing.B) {
	VerifyDummy("warm up")
	for b.Loop() {
		VerifyDummy("a wrong password")
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		user, pw string
		want     string // substring of the error; "" for none
	}{
		{"alice", "", "at least 8 characters"},
		{"alice", "1234567", "at least 8 characters"},
		{"alice", "äöüßéèêë", ""}, // 8 characters, 16 bytes
		{"alice", "äöüßéèê", "at least 8 characters"},
		{"alice", strings.Repeat("xyzw", 64), ""},
		{"alice", strings.Repeat("x", 257), "at most 256 bytes"},
		{"alice", strings.Repeat("é", 129), "at most 256 bytes"},
		{"alice", "abcdefg\xff", "valid UTF-8"},
		{"alice", "correct horse battery staple", ""},
		{"alice", "Tr0ub4dor&3x", ""},
		{"alice", "pw-alice-secret", ""},
		// Repetitive.
		{"alice", "aaaaaaaaaaaa", "at least 4 different characters"},
		{"alice", "abababababab", "at least 4 different characters"},
		{"alice", "aaaa1111", "at least 4 different characters"},
		// Built on the user name.
		{"alice", "alice", "at least 8 characters"},
		{"alicewonder", "alicewonder", "user name"},
		{"alicewonder", "AliceWonder", "user name"},
		{"alicewonder", "rednowecila", "user name"},
		{"alicewonder", "alicewonder2024!", "user name"},
		{"alice", "alice2024!", "user name"},
		{"alice", "Alice-1234", "user name"},
		{"alice", "4l1ce-2024", "user name"},
		{"alice", "alicealice", "user name"},
		{"alice", "alice loves long walks", ""},
		{"bo", "bo-and-more-words", ""},
		// Common.
		{"alice", "password", "too common"},
		{"alice", "Password1", "too common"},
		{"alice", "Password123!", "too common"},
		{"alice", "P@ssw0rd", "too common"},
		{"alice", "p@$$w0rd2024", "too common"},
		{"alice", "12345678", "too common"},
		{"alice", "123456789", "too common"},
		{"alice", "87654321", "too common"},
		{"alice", "qwertyuiop", "too common"},
		{"alice", "QWERTYUIOP", "too common"},
		{"alice", "asdfghjkl", "too common"},
		{"alice", "abcdefgh", "too common"},
		{"alice", "iloveyou", "too common"},
		{"alice", "iloveyou2", "too common"},
		{"alice", "monkey123", "too common"},
		{"alice", "2024dragon", "too common"},
		{"alice", "letmein!!", "too common"},
		{"alice", "polyvisor1", "too common"},
		{"alice", "1q2w3e4r", "too common"},
		{"alice", "zaq12wsx", "too common"},
		{"", "changeme123", "too common"},
		{"", "a-long-passphrase", ""},
	} {
		err := Validate(tt.user, tt.pw)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Validate(%q, %q) = %v; want nil", tt.user, tt.pw, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Validate(%q, %q) = %v; want an error containing %q", tt.user, tt.pw, err, tt.want)
		case err != nil && !strings.HasSuffix(err.Error(), Rule):
			t.Errorf("Validate(%q, %q) = %v; want it to end with the rule", tt.user, tt.pw, err)
		}
	}
	if len(common) < 200 {
		t.Errorf("%d common passwords loaded; want the whole list", len(common))
	}
}

func BenchmarkHash(b *testing.B) {
	for b.Loop() {
		if _, err := Hash("correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}
