package cli

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/api"
	"github.com/polyvisor/polyvisor/client"
	"github.com/polyvisor/polyvisor/internal/audit"
)

// auditFlags are the filters of audit list and audit export, with what
// the command line says of the project.
type auditFlags struct {
	Since, Until, Actor, Resource, Action, Outcome string
	Limit                                          int
	// AllProjects is --all-projects; AllProjectsSet tells it was given.
	AllProjects, AllProjectsSet bool
	// Project is the project in force; ProjectGiven tells --project was
	// given on the command line.
	Project      string
	ProjectGiven bool
}

// query turns the flags into an audit query, reading relative times back
// from now. Without --project, the query covers every project the caller
// may audit unless --all-projects=false.
func (f auditFlags) query(now time.Time) (api.AuditQuery, error) {
	q := api.AuditQuery{Actor: f.Actor, Action: f.Action, Limit: f.Limit}
	var err error
	if q.Since, err = parseAuditTime("--since", f.Since, now); err != nil {
		return q, err
	}
	if q.Until, err = parseAuditTime("--until", f.Until, now); err != nil {
		return q, err
	}
	if !q.Since.IsZero() && !q.Until.IsZero() && q.Since.After(q.Until) {
		return q, usagef("--since: %s is after --until %s", q.Since.Format(time.RFC3339), q.Until.Format(time.RFC3339))
	}
	switch f.Outcome {
	case "", api.AuditSuccess, api.AuditFailure, api.AuditDenied:
		q.Outcome = f.Outcome
	default:
		return q, usagef("--outcome: %q is not success, failure or denied", f.Outcome)
	}
	if f.Limit < 0 {
		return q, usagef("--limit: must not be negative")
	}
	if kind, name, ok := strings.Cut(f.Resource, "/"); ok && (kind == "" || name == "") {
		return q, usagef("--resource: %q: want KIND/NAME (vm/web1) or a NAME", f.Resource)
	}
	q.Resource = f.Resource
	all := !f.ProjectGiven
	if f.AllProjectsSet {
		if f.AllProjects && f.ProjectGiven {
			return q, usagef("--all-projects: conflicts with --project; give one")
		}
		all = f.AllProjects
	}
	if !all {
		q.Project = f.Project
		if q.Project == "" {
			q.Project = api.DefaultProject
		}
	}
	return q, nil
}

// parseAuditTime reads a time flag: a duration back from now (1h, 7d) or
// an RFC 3339 time.
func parseAuditTime(flag, s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return t, nil
	}
	d, err := parseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, usagef("%s: %q is neither a duration back from now (30m, 1h, 7d) nor an RFC 3339 time (2025-06-01T12:00:00Z)", flag, s)
	}
	return now.Add(-d), nil
}

// addAuditFlags adds the filters shared by audit list and audit export.
func addAuditFlags(cmd *cobra.Command, f *auditFlags) {
	fl := cmd.Flags()
	fl.StringVar(&f.Since, "since", "", "only records after this: a duration back from now (1h, 7d) or an RFC 3339 time")
	fl.StringVar(&f.Until, "until", "", "only records before this: a duration back from now or an RFC 3339 time")
	fl.StringVar(&f.Actor, "actor", "", "only the records of this user or host `name`")
	fl.StringVar(&f.Resource, "resource", "", "only the records about this resource: `kind/name` (vm/web1) or a name")
	fl.StringVar(&f.Action, "action", "", "only this `action`, e.g. vm.start or project.update")
	fl.StringVar(&f.Outcome, "outcome", "", "only this outcome: success, failure or denied")
	fl.BoolVar(&f.AllProjects, "all-projects", true, "search every project you may audit; false: only the project in force (--project implies false)")
}

// auditQuery reads the audit flags of cmd.
func (a *app) auditQuery(cmd *cobra.Command, f auditFlags) (api.AuditQuery, *client.Client, error) {
	cfg, err := a.config()
	if err != nil {
		return api.AuditQuery{}, nil, err
	}
	f.Project = cfg.Project
	f.ProjectGiven = projectGiven(cmd)
	f.AllProjectsSet = cmd.Flags().Changed("all-projects")
	q, err := f.query(time.Now())
	if err != nil {
		return q, nil, err
	}
	c, _, err := a.clientFor(cfg)
	return q, c, err
}

// auditActor names who made a request.
func auditActor(a api.AuditActor) string {
	switch {
	case a.Name == "":
		return orDash(a.Kind)
	case a.Kind == "user" || a.Kind == "":
		return a.Name
	default:
		return a.Kind + ":" + a.Name
	}
}

// auditResource names what a request was about.
func auditResource(r api.Ref) string {
	if r.Name == "" {
		return orDash(r.Kind)
	}
	return r.Kind + "/" + r.Name
}

func (a *app) auditCommand() *cobra.Command {
	cmd := group("audit", "Read the audit log: who did what, when, and how it went")
	cmd.AddCommand(a.auditListCommand(), a.auditExportCommand(), a.auditStatusCommand(), a.auditVerifyCommand())
	return cmd
}

func (a *app) auditStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the audit log's size, limits, whether it can write, and its alarms (superadmin)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			st, err := c.AuditStatus(cmd.Context())
			if err != nil {
				return err
			}
			return a.print(cmd.OutOrStdout(), st, func(tw *tabwriter.Writer) {
				row(tw, "Writable:", yesNo(st.Writable))
				row(tw, "Size:", fmt.Sprintf("%s of %s (past it an alarm; records younger than %s are kept)",
					formatBytes(st.Bytes), formatBytes(st.MaxBytes), time.Duration(st.MaxAgeSeconds)*time.Second))
				row(tw, "Segments:", st.Segments)
				row(tw, "Last record:", st.LastSeq)
				row(tw, "When full:", st.WhenFull)
				row(tw, "Fail closed:", yesNo(st.FailClosed))
				row(tw, "Records lost:", st.Lost)
				row(tw, "Refusals folded:", st.Aggregated)
				printAlarms(tw, st.Alarms)
			})
		},
	}
}

func (a *app) auditVerifyCommand() *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "verify [--dir DIR]",
		Short: "Check the audit log's hash chain and say what is lost or damaged, and where",
		Long: `Check the audit log's hash chain: every record holds the hash of the one
before it, across segments. Each problem is reported with the segment file,
the byte range and the record numbers it concerns. The server does it
(superadmin), or, with --dir, this command reads an audit directory itself
(the server may be stopped). Exits 1 when a problem is found.`,
		Example: "  polyvisor audit verify\n  polyvisor audit verify --dir /var/lib/polyvisor/audit",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var v *api.AuditVerification
			if dir != "" {
				got, err := audit.VerifyDir(cmd.Context(), dir)
				if err != nil {
					return fmt.Errorf("--dir: %w", err)
				}
				v = &got
			} else {
				c, _, err := a.client()
				if err != nil {
					return err
				}
				if v, err = c.VerifyAudit(cmd.Context()); err != nil {
					return err
				}
			}
			err := a.print(cmd.OutOrStdout(), v, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "%d records in %d segments, numbers %d to %d", v.Records, v.Segments, v.FirstSeq, v.LastSeq)
				if v.Unchained > 0 {
					fmt.Fprintf(tw, ", after %d written before the hash chain", v.Unchained)
				}
				fmt.Fprintln(tw)
				if v.Pruned != nil {
					fmt.Fprintf(tw, "Records %d to %d were removed by retention.\n", v.Pruned.FromSeq, v.Pruned.ToSeq)
				}
				if v.OK {
					fmt.Fprintln(tw, "The hash chain is whole.")
					return
				}
				row(tw, "PROBLEM", "SEGMENT", "BYTES", "RECORDS", "WHAT")
				for _, p := range v.Problems {
					bytes, recs := "-", "-"
					if p.Span.End > p.Span.Offset {
						bytes = fmt.Sprintf("%d-%d", p.Span.Offset, p.Span.End)
					}
					if p.Span.ToSeq > 0 {
						recs = fmt.Sprintf("%d-%d", p.Span.FromSeq, p.Span.ToSeq)
					}
					row(tw, p.Kind, orDash(p.Span.Segment), bytes, recs, p.Message)
				}
			})
			if err != nil {
				return err
			}
			if !v.OK {
				return fmt.Errorf("the audit log has %d problems", len(v.Problems))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "read this audit `directory` here instead of asking the server")
	return cmd
}

// printAlarms adds a table of alarms, or says there is none.
func printAlarms(tw *tabwriter.Writer, alarms []api.Alarm) {
	if len(alarms) == 0 {
		row(tw, "Alarms:", "none")
		return
	}
	fmt.Fprintln(tw)
	row(tw, "ALARM", "SINCE", "PATH", "MESSAGE")
	for _, al := range alarms {
		row(tw, al.Name, al.Since.Local().Format(time.DateTime), orDash(al.Path), al.Message)
	}
}

func (a *app) auditListCommand() *cobra.Command {
	var f auditFlags
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the newest audit records matching the filters, oldest first",
		Example: "  polyvisor audit list --since 1h --outcome denied\n" +
			"  polyvisor audit list --project web --resource vm/web1 --action vm.delete",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, c, err := a.auditQuery(cmd, f)
			if err != nil {
				return err
			}
			recs, missing, err := c.ListAuditPartial(cmd.Context(), q)
			if err != nil {
				return err
			}
			if len(missing) > 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "Warning: the audit logs of server(s) %s could not be read (down or unreachable): their records are missing here\n", strings.Join(missing, ", "))
			}
			return a.print(cmd.OutOrStdout(), api.List[api.AuditRecord]{Items: nonNil(recs)}, func(tw *tabwriter.Writer) {
				row(tw, "TIME", "ACTOR", "ACTION", "RESOURCE", "PROJECT", "OUTCOME", "STATUS", "OPERATION")
				for _, r := range recs {
					status := "-"
					if r.Status > 0 {
						status = strconv.Itoa(r.Status)
					}
					row(tw, r.Time.Local().Format(time.DateTime), auditActor(r.Actor), r.Action, auditResource(r.Resource),
						orDash(r.Project), r.Outcome, status, orDash(r.OperationID))
				}
			})
		},
	}
	addAuditFlags(cmd, &f)
	cmd.Flags().IntVar(&f.Limit, "limit", 0, "list at most this many, the newest (default: the server's, 100)")
	return cmd
}

func (a *app) auditExportCommand() *cobra.Command {
	var f auditFlags
	var file string
	cmd := &cobra.Command{
		Use:   "export [--file FILE]",
		Short: "Write every audit record matching the filters as JSON lines",
		Example: "  polyvisor audit export --since 30d --file audit.jsonl\n" +
			"  polyvisor audit export --actor alice | jq .action",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, c, err := a.auditQuery(cmd, f)
			if err != nil {
				return err
			}
			if file == "" || file == "-" {
				out := cmd.OutOrStdout()
				if !isTerminal(out) {
					return c.ExportAudit(cmd.Context(), q, out)
				}
				// On a terminal, characters that would act on it are
				// escaped (the same JSON values).
				js := &jsonSafeWriter{w: out}
				if err := c.ExportAudit(cmd.Context(), q, js); err != nil {
					return err
				}
				return js.Close()
			}
			n, err := exportToFile(file, func(w io.Writer) error { return c.ExportAudit(cmd.Context(), q, w) })
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "Wrote %d audit records to %s\n", n, file)
			return nil
		},
	}
	addAuditFlags(cmd, &f)
	cmd.Flags().IntVar(&f.Limit, "limit", 0, "export at most this many, the newest (default: all)")
	cmd.Flags().StringVar(&file, "file", "", "write to this `file` (mode 0600) instead of standard output")
	return cmd
}

// exportToFile runs export into a new file that replaces path once it is
// complete, and returns how many lines it wrote.
func exportToFile(path string, export func(io.Writer) error) (int, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return 0, fmt.Errorf("--file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename, removes nothing
	lc := &lineCounter{w: tmp}
	if err := export(lc); err != nil {
		tmp.Close()
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("--file: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, fmt.Errorf("--file: %w", err)
	}
	return lc.lines, nil
}

// lineCounter counts the lines written through it.
type lineCounter struct {
	w     io.Writer
	lines int
}

func (l *lineCounter) Write(b []byte) (int, error) {
	n, err := l.w.Write(b)
	l.lines += bytes.Count(b[:n], []byte{'\n'})
	return n, err
}
