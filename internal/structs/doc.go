// Package structs defines the wire types of Trellis's HTTP API, once: the
// server, the CLI and the tests share them. JSON field names and shapes follow
// Consul's v1 API so that existing clients decode them unchanged.
package structs
