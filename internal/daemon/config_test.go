package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

func configCommand() (*cobra.Command, *string, *[]string, *time.Duration, *bool) {
	cmd := &cobra.Command{Use: "server"}
	accel := cmd.Flags().String("accel", "auto", "")
	eps := cmd.Flags().StringSlice("etcd-endpoints", nil, "")
	hb := cmd.Flags().Duration("heartbeat-timeout", 15*time.Second, "")
	noAgent := cmd.Flags().Bool("no-agent", false, "")
	var conf string
	addConfigFlag(cmd, &conf, "")
	return cmd, accel, eps, hb, noAgent
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigFileSetsFlagsTheCommandLineDidNot(t *testing.T) {
	cmd, accel, eps, hb, noAgent := configCommand()
	if err := cmd.Flags().Parse([]string{"--heartbeat-timeout", "9s"}); err != nil {
		t.Fatal(err)
	}
	p := writeConfig(t, "accel: tcg\netcd-endpoints: [https://a:2379, https://b:2379]\nheartbeat-timeout: 30s\nno-agent: true\n")
	if err := applyConfigFile(cmd, p, ""); err != nil {
		t.Fatal(err)
	}
	if *accel != "tcg" || strings.Join(*eps, " ") != "https://a:2379 https://b:2379" || !*noAgent {
		t.Fatalf("settings not applied: accel %q, endpoints %v, no-agent %v", *accel, *eps, *noAgent)
	}
	if *hb != 9*time.Second {
		t.Fatalf("the command line lost to the file: heartbeat-timeout %s", *hb)
	}
}

func TestConfigFileErrorsNameTheSetting(t *testing.T) {
	for text, want := range map[string]string{
		"acel: tcg\n":               `unknown setting "acel"`,
		"heartbeat-timeout: soon\n": "heartbeat-timeout: invalid argument",
		"accel: [kvm, tcg]\n":       "accel: a list, but the setting takes one string",
		"etcd-endpoints: {a: b}\n":  "etcd-endpoints: a map",
		"- accel\n":                 "not a YAML map of settings",
		"config: /etc/other.yaml\n": `unknown setting "config"`,
	} {
		cmd, _, _, _, _ := configCommand()
		err := applyConfigFile(cmd, writeConfig(t, text), "")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want it to say %q", text, err, want)
		}
	}
	// A missing default file is no error; a missing named one is.
	cmd, _, _, _, _ := configCommand()
	if err := applyConfigFile(cmd, "", filepath.Join(t.TempDir(), "absent.yaml")); err != nil {
		t.Fatalf("absent default file: %v", err)
	}
	if err := applyConfigFile(cmd, filepath.Join(t.TempDir(), "absent.yaml"), ""); err == nil {
		t.Fatal("a named file that does not exist was accepted")
	}
}
