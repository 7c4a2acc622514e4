package password

import (
	"crypto/rand"
	"strings"
	"testing"
	"time"
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

func TestVerifyDummyTiming(t *testing.T) {
	enc, err := Hash("the real password")
	if err != nil {
		t.Fatal(err)
	}
	VerifyDummy("warm up") // computes the dummy hash
	const n = 2
	timeIt := func(f func()) time.Duration {
		start := time.Now()
		for range n {
			f()
		}
		return time.Since(start)
	}
	verify := timeIt(func() { Verify("a wrong password", enc) })
	dummy := timeIt(func() { VerifyDummy("a wrong password") })
	if dummy*3 < verify || verify*3 < dummy {
		t.Errorf("%d Verify took %v but %d VerifyDummy took %v; want within a factor of 3", n, verify, n, dummy)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		pw   string
		want string // substring of the error; "" for none
	}{
		{"", "at least 8 characters"},
		{"1234567", "at least 8 characters"},
		{"12345678", ""},
		{"äöüßéèêë", ""}, // 8 characters, 16 bytes
		{"äöüßéèê", "at least 8 characters"},
		{strings.Repeat("x", 256), ""},
		{strings.Repeat("x", 257), "at most 256 bytes"},
		{strings.Repeat("é", 129), "at most 256 bytes"},
		{"abcdefg\xff", "valid UTF-8"},
	} {
		err := Validate(tt.pw)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Validate(%q) = %v; want nil", tt.pw, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Validate(%q) = %v; want an error containing %q", tt.pw, err, tt.want)
		}
	}
}

func BenchmarkHash(b *testing.B) {
	for b.Loop() {
		if _, err := Hash("correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}
