package api

import _ "embed" // for the OpenAPI document

// OpenAPI is the OpenAPI 3 document of the /v1 API, served at
// GET /v1/openapi.json. It is written by hand next to docs/API.md, and
// tests hold it against the route table, the wire types and the server.
//
//go:embed openapi.json
var OpenAPI []byte
