package proxy

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// defaultDownstreamIdle is Envoy's idle timeout of downstream HTTP
// connections (common_http_protocol_options.idle_timeout) when unset.
const defaultDownstreamIdle = time.Hour

// httpSpec is a compiled HTTP connection manager.
type httpSpec struct {
	protocols  http.Protocols
	rbac       []*rbacEngine // the HTTP RBAC filters: all must allow
	routes     *routeTable   // inline route_config, or
	rds        string        // the RDS route configuration's name
	localReply *localReplyConfig
	idleConn   time.Duration // downstream connections; 0: none
	streamIdle time.Duration // stream_idle_timeout; 0: none
	upgrades   []string      // upgrade_configs enabled, lower case
}

// serverKey is what a listener's http.Server depends on. It is worked
// out for every accepted connection, hence a comparable struct rather
// than a formatted string.
type serverKey struct {
	protocols http.Protocols
	idleConn  time.Duration
}

func (h *httpSpec) serverKey() serverKey { return serverKey{h.protocols, h.idleConn} }

func (st *state) compileHCM(c *hcmv3.HttpConnectionManager, dtls *downstreamTLS) (*httpSpec, error) {
	if err := onlyFields(c, "codec_type", "stat_prefix", "route_config", "rds", "http_filters", "local_reply_config",
		"common_http_protocol_options", "stream_idle_timeout", "http_protocol_options", "http2_protocol_options",
		"upgrade_configs"); err != nil {
		return nil, err
	}
	if o := c.GetHttpProtocolOptions(); o != nil {
		if err := onlyFields(o); err != nil {
			return nil, fmt.Errorf("http_protocol_options: %w", err)
		}
	}
	if o := c.GetHttp2ProtocolOptions(); o != nil {
		if err := onlyFields(o); err != nil {
			return nil, fmt.Errorf("http2_protocol_options: %w", err)
		}
	}
	h := &httpSpec{idleConn: defaultDownstreamIdle}
	h1, h2 := true, true
	switch c.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO:
	case hcmv3.HttpConnectionManager_HTTP1:
		h2 = false
	case hcmv3.HttpConnectionManager_HTTP2:
		h1 = false
	default:
		return nil, fmt.Errorf("codec_type %s is not supported", c.GetCodecType())
	}
	if dtls != nil {
		// Over TLS, HTTP/2 needs ALPN to pick it.
		h.protocols.SetHTTP1(h1)
		if h2 && !h1 && !slices.Contains(dtls.alpn, "h2") {
			dtls.alpn = append([]string{"h2"}, dtls.alpn...)
		}
		h.protocols.SetHTTP2(h2 && slices.Contains(dtls.alpn, "h2"))
	} else {
		// In plaintext, HTTP/1.1 or HTTP/2 with prior knowledge, told
		// apart by the connection preface.
		h.protocols.SetHTTP1(h1)
		h.protocols.SetUnencryptedHTTP2(h2)
	}
	switch rs := c.GetRouteSpecifier().(type) {
	case *hcmv3.HttpConnectionManager_RouteConfig:
		t, err := compileRouteTable(rs.RouteConfig, st.clusters)
		if err != nil {
			return nil, fmt.Errorf("route_config %q: %w", rs.RouteConfig.GetName(), err)
		}
		h.routes = t
	case *hcmv3.HttpConnectionManager_Rds:
		if rs.Rds.GetConfigSource().GetAds() == nil {
			return nil, errors.New("rds: only an ADS config_source is supported")
		}
		h.rds = rs.Rds.GetRouteConfigName()
		if _, ok := st.routes[h.rds]; !ok {
			return nil, fmt.Errorf("rds: no route configuration %q", h.rds)
		}
	default:
		return nil, fmt.Errorf("route specifier %T is not supported", rs)
	}
	filters := c.GetHttpFilters()
	if len(filters) == 0 {
		return nil, errors.New("no http filters")
	}
	for i, hf := range filters {
		if hf.GetIsOptional() || hf.GetDisabled() {
			return nil, fmt.Errorf("http filter %q: optional and disabled filters are not supported", hf.GetName())
		}
		tc := hf.GetTypedConfig()
		if tc == nil {
			return nil, fmt.Errorf("http filter %q: no typed_config", hf.GetName())
		}
		msg, err := tc.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("http filter %q: unsupported config %s: %v", hf.GetName(), tc.GetTypeUrl(), err)
		}
		last := i == len(filters)-1
		switch f := msg.(type) {
		case *httprbacv3.RBAC:
			if last {
				return nil, fmt.Errorf("http filter %q: RBAC cannot be the last filter", hf.GetName())
			}
			if err := onlyFields(f, "rules"); err != nil {
				return nil, fmt.Errorf("http filter %q: %w", hf.GetName(), err)
			}
			e, err := compileRBAC(f.GetRules(), false)
			if err != nil {
				return nil, fmt.Errorf("http filter %q: %w", hf.GetName(), err)
			}
			if e != nil {
				h.rbac = append(h.rbac, e)
			}
		case *routerv3.Router:
			if !last {
				return nil, fmt.Errorf("http filter %q: the router must be the last filter", hf.GetName())
			}
			if err := onlyFields(f); err != nil {
				return nil, fmt.Errorf("http filter %q: %w", hf.GetName(), err)
			}
		default:
			return nil, fmt.Errorf("http filter %q: unsupported config %s", hf.GetName(), tc.GetTypeUrl())
		}
	}
	var err error
	if h.localReply, err = compileLocalReply(c.GetLocalReplyConfig()); err != nil {
		return nil, fmt.Errorf("local_reply_config: %w", err)
	}
	if o := c.GetCommonHttpProtocolOptions(); o != nil {
		if err := onlyFields(o, "idle_timeout"); err != nil {
			return nil, fmt.Errorf("common_http_protocol_options: %w", err)
		}
		if d := o.GetIdleTimeout(); d != nil {
			if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
				return nil, fmt.Errorf("common_http_protocol_options: idle_timeout %v is not a duration", d)
			}
			h.idleConn = d.AsDuration()
		}
	}
	if d := c.GetStreamIdleTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return nil, fmt.Errorf("stream_idle_timeout %v is not a duration", d)
		}
		h.streamIdle = d.AsDuration()
	}
	for i, u := range c.GetUpgradeConfigs() {
		if err := onlyFields(u, "upgrade_type", "enabled"); err != nil {
			return nil, fmt.Errorf("upgrade_configs[%d]: %w", i, err)
		}
		t := strings.ToLower(u.GetUpgradeType())
		switch t {
		case "":
			return nil, fmt.Errorf("upgrade_configs[%d]: upgrade_type is empty", i)
		case "connect", "h2c":
			return nil, fmt.Errorf("upgrade_configs[%d]: upgrade_type %s is not supported", i, u.GetUpgradeType())
		}
		if e := u.GetEnabled(); e == nil || e.GetValue() {
			h.upgrades = append(h.upgrades, t)
		}
	}
	return h, nil
}
