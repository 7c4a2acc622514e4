// The console's one event stream. It asks for no types: it follows every
// kind of event the server publishes and each view picks its own, so no
// view waits on a kind the stream was not asked for (a list of types kept
// here once lacked "migration", and a started migration's page stayed
// "pending" while the server ran it to its end).
export function eventsPath(since: number): string {
  return since > 0 ? `/v1/events?since=${since}` : '/v1/events';
}
