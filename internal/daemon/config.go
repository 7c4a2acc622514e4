package daemon

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"
)

// Daemon config files hold the same settings as the flags, by flag name:
//
//	accel: auto
//	listen: ":7443"
//	etcd-endpoints: [https://10.0.0.1:2379, https://10.0.0.2:2379]
//
// A flag given on the command line wins over the file.
const (
	DefaultServerConfig = "/etc/polyvisor/server.yaml"
	DefaultAgentConfig  = "/etc/polyvisor/agent.yaml"
)

// addConfigFlag registers --config on a daemon command.
func addConfigFlag(cmd *cobra.Command, path *string, def string) {
	cmd.Flags().StringVar(path, "config", "", "settings file in YAML, keyed by flag name (default "+def+" when it exists); flags given on the command line win")
}

// applyConfigFile sets, from the YAML file at path (or def when path is
// empty and def exists), every flag of cmd not given on the command line.
// An unknown setting or a value its flag refuses is an error naming it.
func applyConfigFile(cmd *cobra.Command, path, def string) error {
	explicit := path != ""
	if !explicit {
		path = def
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("reading the config file: %w", err)
	}
	var settings map[string]any
	if err := yaml.Unmarshal(raw, &settings); err != nil {
		return fmt.Errorf("config file %s: not a YAML map of settings: %w", path, err)
	}
	flags := cmd.Flags()
	keys := make([]string, 0, len(settings))
	for k := range settings {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := flags.Lookup(k)
		if f == nil || k == "config" || k == "help" {
			return fmt.Errorf("config file %s: unknown setting %q (the settings are the flags of 'polyvisor %s')", path, k, cmd.Name())
		}
		if f.Changed {
			continue
		}
		v, err := settingValue(settings[k], f)
		if err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, k, err)
		}
		if err := flags.Set(k, v); err != nil {
			return fmt.Errorf("config file %s: %s: %w", path, k, err)
		}
	}
	return nil
}

// settingValue turns a YAML value into its flag's text form.
func settingValue(v any, f *pflag.Flag) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", errors.New("no value")
	case []any:
		if !strings.HasSuffix(f.Value.Type(), "Slice") {
			return "", fmt.Errorf("a list, but the setting takes one %s", f.Value.Type())
		}
		parts := make([]string, len(x))
		for i, e := range x {
			switch e.(type) {
			case map[string]any, []any:
				return "", errors.New("a list may hold only plain values")
			}
			parts[i] = fmt.Sprint(e)
		}
		return strings.Join(parts, ","), nil
	case map[string]any:
		return "", errors.New("a map, but the setting takes a plain value")
	default:
		return fmt.Sprint(x), nil
	}
}
