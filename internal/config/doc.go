// Package config owns the agent's configuration: it parses the command-line
// flags of "trellis agent" and the JSON and HCL config files they name, layers
// them, validates the result and hands the agent one RuntimeConfig. Nothing
// else in Trellis reads flags or config files. It also reads the service
// definition files of "trellis services register" (ParseServiceDefinitions),
// with the same decoder and checks, so that a definition means the same in
// either kind of file.
//
// Flag names and config-file keys are Consul's, so that config written for a
// Consul agent loads unchanged. Keys Trellis accepts but does not act on
// (connect, performance, telemetry, ...) are ignored; security settings it
// does not implement (acl, encrypt, tls, ...) load with a warning; keys it
// does not know at all are reported in RuntimeConfig.Warnings rather than
// failing the load, because Consul configs often carry keys from newer or
// enterprise versions.
//
// # Layering
//
// Sources are applied in this order, each overriding the ones before it:
//
//  1. built-in defaults (8500 for HTTP, 8600 for DNS, ...)
//  2. -dev defaults, when -dev is given
//  3. -config-file and -config-dir paths, in the order given on the command
//     line; a directory contributes its *.json and *.hcl files in lexical
//     order
//  4. the other command-line flags
//  5. -hcl fragments, in order
//
// A later source replaces a scalar value set by an earlier one; lists
// (services, checks, retry_join, recursors, ...) are appended; maps
// (node_meta, dns_config.service_ttl) are merged key by key.
//
// # Example
//
// An HCL file, loaded with "trellis agent -config-file web.hcl":
//
//	datacenter = "east"
//	data_dir   = "/var/lib/trellis"
//	server     = true
//	bootstrap  = true
//	ports {
//	  http = 8500
//	  grpc = 8502
//	}
//	dns_config {
//	  service_ttl { "*" = "5s" }
//	}
//	service {
//	  name = "web"
//	  port = 8080
//	  meta { version = "2" }
//	  check {
//	    http     = "http://127.0.0.1:8080/health"
//	    interval = "10s"
//	  }
//	}
//
// The same in JSON:
//
//	{
//	  "datacenter": "east",
//	  "data_dir": "/var/lib/trellis",
//	  "server": true,
//	  "bootstrap": true,
//	  "ports": {"http": 8500, "grpc": 8502},
//	  "dns_config": {"service_ttl": {"*": "5s"}},
//	  "service": {
//	    "name": "web",
//	    "port": 8080,
//	    "meta": {"version": "2"},
//	    "check": {"http": "http://127.0.0.1:8080/health", "interval": "10s"}
//	  }
//	}
package config
