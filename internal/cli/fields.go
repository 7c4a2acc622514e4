package cli

import (
	"errors"
	"regexp"
	"strings"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
)

// The server names the request field at fault in an invalid error
// ("memoryMiB", "disks[0].image"); the user typed a flag (--memory,
// --image) or an argument (NAME). fieldSource finds which.
//
// Most fields follow the CLI's naming convention: the flag is the field's
// last element in kebab case, without the unit the API spells out
// (memoryMiB is --memory, cloudInit.userData is --user-data,
// stopTimeoutSeconds is --stop-timeout, quota.vcpus is --vcpus). The
// table below holds the exceptions, per command.

// fieldSource maps API fields matching pattern to the flag ("--image") or
// positional argument ("DURATION") of a command that sets them. In a
// pattern, "[*]" matches any index and "*" one path element.
type fieldSource struct {
	pattern string
	source  string
}

// fieldSources are the exceptions to the naming convention, by command
// path below the root. Where several entries match, the first one whose
// flag the user gave wins; when the user gave none of them, all are named.
var fieldSources = map[string][]fieldSource{
	"vm create": {
		{"disks[0].sizeMiB", "--disk-size"},
		{"disks[*].sizeMiB", "--blank-disk"},
		{"disks[*]", "--blank-disk"},
		{"disks", "--image"},
		{"disks", "--blank-disk"},
		{"nics[0].network", "--network"},
		{"nics[*].network", "--nic"},
		{"nics[*].*", "--nic"},
		{"nics[*].securityGroups[*]", "--nic"},
		{"nics[*]", "--nic"},
		{"nics", "--nic"},
		{"labels.*", "--label"},
		{"powerState", "--stopped"},
	},
	"vm lease":             {{"leaseSeconds", "DURATION"}, {"durationSeconds", "DURATION"}},
	"vm snapshot create":   {{"name", "SNAPSHOT"}},
	"image import":         {{"url", "FILE|URL"}, {"image", "FILE|URL"}},
	"project create":       {{"labels.*", "--label"}, {"quota.floatingIPs", "--floating-ips"}},
	"role grant":           {{"role", "ROLE"}},
	"token create":         {{"expiresInSeconds", "--expires"}},
	"provider add vsphere": {{"password", "--password-file"}, {"caCert", "--ca-file"}},
	"provider add libvirt": {{"url", "--uri"}},
	"quota set":            {{"quota.floatingIPs", "--floating-ips"}},
	"port create":          {{"fixedIPs[*].ip", "--ip"}, {"fixedIPs[*].subnet", "--ip"}, {"fixedIPs", "--ip"}, {"securityGroups[*]", "--secgroup"}, {"securityGroups", "--secgroup"}, {"labels.*", "--label"}},
	"port update":          {{"securityGroups[*]", "--secgroup"}, {"securityGroups", "--secgroup"}},
	"subnet create":        {{"pools[*].start", "--pool"}, {"pools[*].end", "--pool"}, {"pools[*]", "--pool"}, {"dnsServers[*]", "--dns"}, {"routes[*].destination", "--route"}, {"routes[*].nextHop", "--route"}, {"labels.*", "--label"}},
	"floating-ip create":   {{"address", "--address"}, {"labels.*", "--label"}},
	"secgroup rule add":    {{"rules[0].portMin", "--port"}, {"rules[0].portMax", "--port"}, {"rules[0].direction", "--egress"}},
	"vm nic add":           {{"*", "NIC"}, {"securityGroups[*]", "NIC"}},
	"pool create":          {{"projects", "--grant"}, {"hosts", "--host"}},
	"volume create":        {{"source.image", "--image"}, {"source.volume", "--from"}, {"source.snapshot", "--from"}, {"source", "--image"}, {"source", "--from"}},
}

// commandKey is the path of cmd below the root: "vm create".
func commandKey(cmd *cobra.Command) string {
	path := cmd.CommandPath()
	if cmd.HasParent() {
		path = strings.TrimPrefix(path, cmd.Root().Name()+" ")
	}
	return path
}

// sourceOfField returns the flag ("--memory") or argument ("NAME") of cmd
// that set an API field, or "" when none did.
func sourceOfField(cmd *cobra.Command, field string) string {
	var all []string
	for _, fs := range fieldSources[commandKey(cmd)] {
		if !fieldMatches(fs.pattern, field) {
			continue
		}
		name, isFlag := strings.CutPrefix(fs.source, "--")
		if !isFlag || cmd.Flags().Changed(name) {
			return fs.source
		}
		all = append(all, fs.source)
	}
	if len(all) > 0 {
		return strings.Join(all, " or ")
	}
	if name := conventionalFlag(field); name != "" {
		if f := cmd.Flags().Lookup(name); f != nil && !f.Hidden {
			return "--" + name
		}
	}
	if field == "name" && hasArg(cmd, "NAME") {
		return "NAME"
	}
	return ""
}

var fieldIndex = regexp.MustCompile(`\[[^\]]*\]`)

// conventionalFlag is the flag name the CLI's convention gives an API
// field: its last element, in kebab case, without a unit suffix.
func conventionalFlag(field string) string {
	last := field[strings.LastIndex(field, ".")+1:]
	last = fieldIndex.ReplaceAllString(last, "")
	for _, unit := range []string{"Seconds", "MiB"} {
		if s, ok := strings.CutSuffix(last, unit); ok && s != "" {
			last = s
			break
		}
	}
	var b strings.Builder
	for i, r := range last {
		if unicode.IsUpper(r) {
			if i > 0 && last[i-1] != '-' {
				b.WriteByte('-')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}

// fieldMatches tells whether an API field matches a pattern of
// fieldSources.
func fieldMatches(pattern, field string) bool {
	var re strings.Builder
	re.WriteString("^")
	for i := 0; i < len(pattern); i++ {
		switch {
		case strings.HasPrefix(pattern[i:], "[*]"):
			re.WriteString(`\[[0-9]+\]`)
			i += 2
		case pattern[i] == '*':
			re.WriteString(`[^.\[]+`)
		default:
			re.WriteString(regexp.QuoteMeta(pattern[i : i+1]))
		}
	}
	re.WriteString("$")
	ok, _ := regexp.MatchString(re.String(), field)
	return ok
}

// positionalArgs lists the argument names in a command's Use line:
// "create NAME [--user NAME]" has NAME, "grant USER ROLE" USER and ROLE.
func positionalArgs(cmd *cobra.Command) []string {
	var args []string
	fields := strings.Fields(cmd.Use)
	depth := 0
	for i := 1; i < len(fields); i++ {
		tok := fields[i]
		opened := strings.Count(tok, "[")
		depth += opened
		switch {
		case depth > 0:
		case strings.HasPrefix(tok, "-"):
			if !strings.Contains(tok, "=") && i+1 < len(fields) && !strings.HasPrefix(fields[i+1], "-") && !strings.HasPrefix(fields[i+1], "[") {
				i++ // the flag's value
			}
		case tok == "|":
		default:
			args = append(args, tok)
		}
		depth -= strings.Count(tok, "]")
		if depth < 0 {
			depth = 0
		}
	}
	return args
}

// hasArg tells whether cmd takes the positional argument name.
func hasArg(cmd *cobra.Command, name string) bool {
	for _, a := range positionalArgs(cmd) {
		if a == name {
			return true
		}
	}
	return false
}

// fieldError is an API error about a field, told in terms of the flag or
// argument the user gave.
type fieldError struct {
	err    error      // the whole error, as the command returned it
	api    *api.Error // the server's error within it
	source string     // "--memory", "NAME"
}

func (e *fieldError) Error() string {
	s, old := e.err.Error(), e.api.Error()
	i := strings.LastIndex(s, old)
	if i < 0 {
		return e.source + ": " + s
	}
	// A conflict's message may start with its field already.
	msg := strings.TrimPrefix(e.api.Message, e.api.Field+": ")
	return s[:i] + e.source + ": " + msg + s[i+len(old):]
}

func (e *fieldError) Unwrap() error { return e.err }

// withFieldSource makes an invalid-field error of the server (or a
// conflict naming a field, such as an address taken) name the flag or
// argument of cmd the field came from.
func withFieldSource(cmd *cobra.Command, err error) error {
	var ae *api.Error
	if !errors.As(err, &ae) || (ae.Code != api.CodeInvalid && ae.Code != api.CodeConflict) || ae.Field == "" {
		return err
	}
	src := sourceOfField(cmd, ae.Field)
	if src == "" {
		return err
	}
	return &fieldError{err: err, api: ae, source: src}
}
