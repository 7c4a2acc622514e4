package labels

import "testing"

func TestSelector(t *testing.T) {
	m := map[string]string{"tier": "web", "env": "prod", "owner": "alice"}
	cases := []struct {
		sel  string
		want bool
	}{
		{"", true},
		{"tier=web", true},
		{"tier==web", true},
		{"tier=db", false},
		{"env!=prod", false},
		{"env!=dev", true},
		{"missing!=x", true},
		{"owner", true},
		{"!owner", false},
		{"!legacy", true},
		{"tier=web, env=prod, owner", true},
		{"tier=web,env=dev", false},
	}
	for _, c := range cases {
		sel, err := Parse(c.sel)
		if err != nil {
			t.Fatalf("Parse(%q): %v", c.sel, err)
		}
		if got := sel.Matches(m); got != c.want {
			t.Errorf("%q matches = %v, want %v", c.sel, got, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, s := range []string{"a=b,", "=x", "a b=c", "k=v v", "!"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) succeeded, want an error", s)
		}
	}
}

func TestValidate(t *testing.T) {
	if k, err := Validate(map[string]string{"app": "web", "example.com/team": "a_b-c.d", "empty": ""}); err != nil {
		t.Fatalf("valid labels refused: %s: %v", k, err)
	}
	for _, m := range []map[string]string{
		{"-bad": "x"},
		{"ok": "not valid!"},
		{"": "x"},
		{"sp ace": "x"},
	} {
		if _, err := Validate(m); err == nil {
			t.Errorf("Validate(%v) succeeded, want an error", m)
		}
	}
}
