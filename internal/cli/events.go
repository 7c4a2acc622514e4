package cli

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/polyvisor/polyvisor/client"
)

func (a *app) eventsCommand() *cobra.Command {
	var types []string
	var since int64
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Follow what changes: VMs, hosts, images, operations, providers, networks",
		Long: `Follow the event stream: one line per change to an object you may read, in
the order the store made them, until interrupted. Each event carries the
store's revision; when the server answering goes away, the stream goes on
at another server (the config's servers) from the last revision, without
missing an event. --since REV starts after an event you already have; a
revision the store no longer keeps (older than about 10 minutes) is
refused: list the objects again and follow from now.

With -o json, each event is one line of JSON (NDJSON).`,
		Example: `  polyvisor events
  polyvisor events --type vm,operation
  polyvisor events -o json --since 1234`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, _, err := a.client()
			if err != nil {
				return err
			}
			if since < 0 {
				return fmt.Errorf("--since: a revision is a whole number ≥ 0, not %d", since)
			}
			var kinds []string
			for _, t := range types {
				for _, k := range strings.Split(t, ",") {
					if k = strings.TrimSpace(k); k != "" {
						kinds = append(kinds, k)
					}
				}
			}
			events, errc := c.FollowEvents(cmd.Context(), client.EventOptions{Types: kinds, Since: since})
			w := cmd.OutOrStdout()
			for ev := range events {
				if a.structured() {
					b, err := json.Marshal(ev)
					if err != nil {
						return fmt.Errorf("encode event: %w", err)
					}
					if _, err := fmt.Fprintf(w, "%s\n", jsonSafe(b)); err != nil {
						return err
					}
					continue
				}
				obj := ev.Object.Kind + "/" + ev.Object.Name
				if ev.Object.Project != "" {
					obj = ev.Object.Project + "/" + obj
				}
				line := fmt.Sprintf("%-10d %s  %-9s %s", ev.Revision, ev.Time.Local().Format("15:04:05.000"), ev.Action, obj)
				if ev.VM != nil {
					line += "  " + ev.VM.Status.PowerState
				}
				if ev.Operation != nil {
					line += "  " + ev.Operation.Kind + " " + ev.Operation.Status
				}
				if _, err := fmt.Fprintln(w, termSafe(line, true)); err != nil {
					return err
				}
			}
			if err := <-errc; err != nil && cmd.Context().Err() == nil {
				return fmt.Errorf("follow events: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&types, "type", nil, "event types to follow: vm, host, image, operation, provider, network, subnet, port, security-group, floating-ip (all when absent)")
	cmd.Flags().Int64Var(&since, "since", 0, "start after this revision (an event's revision)")
	return cmd
}
