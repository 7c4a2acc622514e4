package daemon

import (
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

// applyConfigFile sets a command's flags from a YAML file of flag names
// and values, so that every flag can live in the file:
//
//	listen: ":7443"
//	metrics-listen: "10.0.0.5:9100"
//	advertise-address: [pv.example.com, 10.0.0.5]
//	idle-timeout: 90s
//
// A flag given on the command line wins over the file. An unknown name or
// a bad value is an error naming the file and the setting.
func applyConfigFile(cmd *cobra.Command, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the config file: %w", err)
	}
	var settings map[string]any
	if err := yaml.Unmarshal(raw, &settings); err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	names := make([]string, 0, len(settings))
	for name := range settings {
		names = append(names, name)
	}
	slices.Sort(names)
	flags := cmd.Flags()
	for _, name := range names {
		f := flags.Lookup(name)
		if f == nil || name == "config" || name == "help" {
			return fmt.Errorf("config file %s: unknown setting %q (the settings are the flags of %q, without dashes)", path, name, cmd.CommandPath())
		}
		if f.Changed {
			continue
		}
		value, err := flagValue(settings[name])
		if err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, name, err)
		}
		if err := flags.Set(name, value); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, name, err)
		}
	}
	return nil
}

// flagValue writes a YAML value as a flag's text: lists comma-separated.
func flagValue(v any) (string, error) {
	switch v := v.(type) {
	case nil:
		return "", fmt.Errorf("has no value")
	case []any:
		parts := make([]string, 0, len(v))
		for _, e := range v {
			s, err := flagValue(e)
			if err != nil {
				return "", err
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		return "", fmt.Errorf("is a map; want a value or a list")
	}
	return fmt.Sprint(v), nil
}
