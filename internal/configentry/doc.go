// Package configentry owns Trellis's config entries: the kinds
// (proxy-defaults, service-defaults, service-intentions, mesh,
// service-resolver, service-router), their JSON shapes (those of Consul's
// api module), lenient key decoding (CamelCase or snake_case, any case, as
// Consul's HTTP API and HCL files use), normalisation and validation. A
// later kind plugs in by adding a type that implements Entry and a line to
// the kinds table in entry.go.
//
// Example, a service-defaults entry as `trellis config write` reads it:
//
//	Kind     = "service-defaults"
//	Name     = "web"
//	Protocol = "http"
//	upstream_config {
//	  defaults { connect_timeout_ms = 3000 }
//	}
//
// and a service-router and service-resolver of an HTTP service "api":
//
//	Kind = "service-router"
//	Name = "api"
//	routes {
//	  match { http { path_prefix = "/admin" } }
//	  destination {
//	    request_timeout = "2s"
//	    num_retries     = 2
//	    retry_on        = ["5xx"]
//	  }
//	}
//
//	Kind = "service-resolver"
//	Name = "api"
//	load_balancer {
//	  policy = "ring_hash"
//	  hash_policies {
//	    field       = "header"
//	    field_value = "x-user"
//	  }
//	}
package configentry
