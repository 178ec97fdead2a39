package connect

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc/credentials/tls/certprovider"
	_ "google.golang.org/grpc/credentials/tls/certprovider/pemfile" // file_watcher, as the bootstrap names it

	"github.com/trellis-mesh/trellis/internal/agent/agenttest"
	"github.com/trellis-mesh/trellis/internal/cli/clitest"
	"github.com/trellis-mesh/trellis/internal/xds/generate"
)

// The command writes web's leaf, key and the roots, and prints a bootstrap
// naming web's proxy, the agent's xDS port and a file_watcher of those
// files that gRPC's own provider loads: a leaf of web, trusted by the
// roots, usable as a client certificate.
func TestGRPCBootstrap(t *testing.T) {
	a := agenttest.Start(t, agenttest.Options{Args: []string{"-grpc-port", "0"}})
	c, err := api.NewClient(&api.Config{Address: a.HTTPAddr})
	if err != nil {
		t.Fatal(err)
	}
	registerWeb(t, c)
	grpcAddr := a.GRPCAddrs()[0]
	dir := filepath.Join(t.TempDir(), "certs") // created by the command
	r := run(t, "", "grpc-bootstrap", "-sidecar-for", "web-1", "-cert-dir", dir, "-http-addr", a.HTTPAddr, "-grpc-addr", grpcAddr)
	if r.Code != 0 || r.Stderr != "" {
		t.Fatalf("got %+v, want exit 0", r)
	}
	var b struct {
		XDSServers []struct {
			ServerURI    string `json:"server_uri"`
			ChannelCreds []struct {
				Type string `json:"type"`
			} `json:"channel_creds"`
		} `json:"xds_servers"`
		Node struct {
			ID      string `json:"id"`
			Cluster string `json:"cluster"`
		} `json:"node"`
		CertificateProviders map[string]struct {
			PluginName string          `json:"plugin_name"`
			Config     json.RawMessage `json:"config"`
		} `json:"certificate_providers"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &b); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, r.Stdout)
	}
	if len(b.XDSServers) != 1 || b.XDSServers[0].ServerURI != grpcAddr ||
		len(b.XDSServers[0].ChannelCreds) != 1 || b.XDSServers[0].ChannelCreds[0].Type != "insecure" {
		t.Errorf("xds_servers %+v, want %s, insecure", b.XDSServers, grpcAddr)
	}
	if b.Node.ID != "web-1-sidecar-proxy" || b.Node.Cluster != "web-sidecar-proxy" {
		t.Errorf("node %+v, want web-1-sidecar-proxy of web-sidecar-proxy", b.Node)
	}
	cp, ok := b.CertificateProviders[generate.ProxylessCertProvider]
	if !ok || len(b.CertificateProviders) != 1 || cp.PluginName != "file_watcher" {
		t.Fatalf("certificate_providers %+v, want %q alone, a file_watcher", b.CertificateProviders, generate.ProxylessCertProvider)
	}
	if fi, err := os.Stat(filepath.Join(dir, keyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v; want mode 0600", fi, err)
	}

	p, err := certprovider.GetProvider(cp.PluginName, cp.Config, certprovider.BuildOptions{WantIdentity: true, WantRoot: true})
	if err != nil {
		t.Fatalf("gRPC refuses the provider's config: %v\n%s", err, cp.Config)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	km, err := p.KeyMaterial(ctx)
	if err != nil {
		t.Fatalf("gRPC cannot load the files: %v", err)
	}
	if len(km.Certs) != 1 || km.Roots == nil {
		t.Fatalf("key material: %d certificates, roots %v", len(km.Certs), km.Roots)
	}
	leaf, err := x509.ParseCertificate(km.Certs[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.URIs) != 1 || !strings.HasSuffix(leaf.URIs[0].String(), "/svc/web") {
		t.Errorf("leaf URIs %v, want web's SPIFFE ID", leaf.URIs)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: km.Roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf not trusted by the roots as a client certificate: %v", err)
	}
}

func TestGRPCBootstrapErrors(t *testing.T) {
	a, c := clitest.Agent(t)
	registerWeb(t, c)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no cert dir", []string{"-sidecar-for", "web-1"}, "-cert-dir must be set\n"},
		{"no proxy named", []string{"-cert-dir", "x"}, "One of -sidecar-for or -proxy-id must be set\n"},
		{"both named", []string{"-cert-dir", "x", "-sidecar-for", "web-1", "-proxy-id", "x"}, "Only one of -sidecar-for and -proxy-id may be set\n"},
		{"unknown service", []string{"-cert-dir", "x", "-sidecar-for", "nope"}, "No sidecar proxy registered for nope\n"},
		{"proxy-id not a proxy", []string{"-cert-dir", "x", "-proxy-id", "web-1"}, "Service web-1 is not a connect-proxy\n"},
		{"grpc TLS", []string{"-cert-dir", "x", "-proxy-id", "x", "-grpc-addr", "https://127.0.0.1:8503"}, `Invalid -grpc-addr "https://127.0.0.1:8503": only a plaintext`},
		{"cert dir is a file", []string{"-cert-dir", filepath.Join(file, "certs"), "-sidecar-for", "web-1"}, "Error writing the certificates: "},
		{"agent down", []string{"-cert-dir", "x", "-sidecar-for", "web-1", "-http-addr", clitest.DeadAddr(t)}, "Failed looking up sidecar proxy info for web-1: "},
		{"stray argument", []string{"-cert-dir", "x", "-sidecar-for", "web-1", "extra"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"grpc-bootstrap", "-http-addr", a.HTTPAddr}, tc.args...)
			r := run(t, "", args...)
			if r.Code != 1 || !strings.HasPrefix(r.Stderr, tc.want) || r.Stderr == "" || r.Stdout != "" {
				t.Errorf("got %+v, want exit 1 and stderr starting with %q", r, tc.want)
			}
		})
	}
}
