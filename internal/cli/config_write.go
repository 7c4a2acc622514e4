package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"gopkg.in/yaml.v3"
)

// configEdit is a change to some keys of the config file: the keys of set
// get those values, the keys of unset are removed.
type configEdit struct {
	set   map[string]string
	unset []string
}

// editConfigFile applies an edit to the config file at path, keeping its
// other keys, their order and comments. A missing file is created (and its
// directory, mode 0700); the file is rewritten with mode 0600, as it may
// hold a token.
func editConfigFile(path string, edit configEdit) error {
	if path == "" {
		return errors.New("write config: no config file path (give --config)")
	}
	// Write through a symbolic link rather than replace it.
	if target, err := filepath.EvalSymlinks(path); err == nil {
		path = target
	}
	doc, err := readConfigNode(path)
	if err != nil {
		return err
	}
	m := doc.Content[0]
	for _, k := range sortedKeys(edit.set) {
		setMappingKey(m, k, edit.set[k])
	}
	for _, k := range edit.unset {
		removeMappingKey(m, k)
	}
	var buf bytes.Buffer
	if len(m.Content) > 0 || m.HeadComment != "" || m.FootComment != "" {
		enc := yaml.NewEncoder(&buf)
		enc.SetIndent(2)
		if err := enc.Encode(doc); err != nil {
			return fmt.Errorf("write config %s: %w", path, err)
		}
		if err := enc.Close(); err != nil {
			return fmt.Errorf("write config %s: %w", path, err)
		}
	}
	return writeFileAtomic(path, buf.Bytes())
}

// readConfigNode reads a config file as a YAML document whose content is
// one mapping; a missing or empty file gives an empty mapping.
func readConfigNode(path string) (*yaml.Node, error) {
	empty := &yaml.Node{Kind: yaml.DocumentNode, Content: []*yaml.Node{{Kind: yaml.MappingNode, Tag: "!!map"}}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return empty, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return empty, nil
		}
		return nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return empty, nil
	}
	switch m := doc.Content[0]; {
	case m.Kind == yaml.MappingNode:
	case m.Kind == yaml.ScalarNode && m.Tag == "!!null":
		doc.Content[0] = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", HeadComment: m.HeadComment}
	default:
		return nil, fmt.Errorf("read config %s: not a mapping of keys to values", path)
	}
	return &doc, nil
}

// setMappingKey sets key to a string value in a mapping node, in place
// when the key is there, at the end otherwise.
func setMappingKey(m *yaml.Node, key, value string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			v := m.Content[i+1]
			*v = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value,
				LineComment: v.LineComment, HeadComment: v.HeadComment, FootComment: v.FootComment}
			return
		}
	}
	m.Content = append(m.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key},
		&yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value})
}

// removeMappingKey removes key from a mapping node.
func removeMappingKey(m *yaml.Node, key string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			m.Content = append(m.Content[:i], m.Content[i+2:]...)
			return
		}
	}
}

// writeFileAtomic replaces the file at path with b, mode 0600, making its
// directory (mode 0700) if needed.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	f, err := os.CreateTemp(dir, ".config-*.yaml")
	if err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	defer os.Remove(f.Name()) // after the rename, removes nothing
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write config: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
