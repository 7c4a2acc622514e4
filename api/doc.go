// Package api holds Polyvisor's wire types: the JSON shapes of the /v1 REST
// API. The server, the Go client, the CLI, the host agent and the tests all
// speak through these types; nothing in here does I/O.
package api
