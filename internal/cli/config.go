package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"gopkg.in/yaml.v3"
)

// Environment variables that override the config file.
const (
	envServer  = "POLYVISOR_SERVER"
	envToken   = "POLYVISOR_TOKEN"
	envCAFile  = "POLYVISOR_CA_FILE"
	envProject = "POLYVISOR_PROJECT"
	envConfig  = "POLYVISOR_CONFIG" // another config file
)

// Config is what the CLI needs to reach a server: the content of
// config.yaml, overridden by the environment.
type Config struct {
	// Server is "https://host:port" or "unix:///path/to/socket".
	Server string `yaml:"server"`
	// CAFile is a PEM file of the CA that signed the server's certificate;
	// a relative path in the file is relative to the file's directory.
	CAFile string `yaml:"ca-file,omitempty"`
	Token  string `yaml:"token,omitempty"`
	// Project is the project commands act in by default; empty for the
	// server's default project.
	Project string `yaml:"project,omitempty"`
}

// ConfigPath returns the default config file:
// $XDG_CONFIG_HOME/polyvisor/config.yaml, or ~/.config/polyvisor/config.yaml.
func ConfigPath() (string, error) {
	if dir := os.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(dir) {
		return filepath.Join(dir, "polyvisor", "config.yaml"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the config file: %w", err)
	}
	return filepath.Join(home, ".config", "polyvisor", "config.yaml"), nil
}

// LoadConfig reads the config file ($POLYVISOR_CONFIG, else ConfigPath;
// a missing default file is no error) and applies the POLYVISOR_SERVER,
// POLYVISOR_TOKEN, POLYVISOR_CA_FILE and POLYVISOR_PROJECT overrides.
func LoadConfig() (Config, error) {
	path, explicit := os.Getenv(envConfig), true
	if path == "" {
		p, err := ConfigPath()
		if err != nil {
			return Config{}, err
		}
		path, explicit = p, false
	}
	cfg, err := loadConfigFile(path, explicit)
	if err != nil {
		return cfg, err
	}
	cfg.applyEnv()
	return cfg, nil
}

// loadConfigFile reads a config file. A missing file gives an empty Config
// unless mustExist.
func loadConfigFile(path string, mustExist bool) (Config, error) {
	var cfg Config
	if path == "" {
		return cfg, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !mustExist {
		return cfg, nil
	}
	if err != nil {
		return cfg, fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a misspelt key is an error, not a silent default
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("read config %s: %w", path, err)
	}
	if cfg.CAFile != "" && !filepath.IsAbs(cfg.CAFile) {
		cfg.CAFile = filepath.Join(filepath.Dir(path), cfg.CAFile)
	}
	return cfg, nil
}

// applyEnv applies the environment's overrides.
func (c *Config) applyEnv() {
	if v := os.Getenv(envServer); v != "" {
		c.Server = v
	}
	if v := os.Getenv(envToken); v != "" {
		c.Token = v
	}
	if v := os.Getenv(envCAFile); v != "" {
		c.CAFile = v
	}
	if v := os.Getenv(envProject); v != "" {
		c.Project = v
	}
}

// WriteConfig writes cfg to path (readable by its owner only, as it holds
// a token), making the directory if needed. The file is replaced whole.
func WriteConfig(path string, cfg Config) error {
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("encode config: %w", err)
	}
	return writeFileAtomic(path, b)
}
