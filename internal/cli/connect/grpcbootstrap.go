package connect

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/consul/api"

	"github.com/trellis-mesh/trellis/internal/cli/cliflags"
	"github.com/trellis-mesh/trellis/internal/xds/generate"
)

const grpcBootstrapHelp = `
Usage: trellis connect grpc-bootstrap [options] -cert-dir DIR (-sidecar-for SERVICE-ID | -proxy-id ID)

  Prepares a proxyless gRPC application to join the mesh in place of a
  sidecar: it writes the proxy's certificates to DIR and prints an xDS
  bootstrap (JSON) for gRPC's xDS client. The application then dials
  "xds:///<upstream>" with xDS transport credentials and is balanced
  across the upstream's healthy instances, over mTLS to their sidecars.

      $ trellis connect grpc-bootstrap -sidecar-for web-1 -cert-dir /etc/web/certs > /etc/web/xds.json
      $ GRPC_XDS_BOOTSTRAP=/etc/web/xds.json ./web

  The files are leaf.pem (the service's certificate), leaf-key.pem (its
  key, mode 0600) and roots.pem (the CA roots); the bootstrap names them
  in the certificate provider "` + generate.ProxylessCertProvider + `" (gRPC's file_watcher,
  which re-reads them every minute). They are written once: run the
  command again before the leaf expires.

  The application's xDS node ID is the proxy's service ID: the upstreams
  it may dial are the proxy's, and the agent at -grpc-addr (plaintext)
  serves them. -sidecar-for names the service the proxy fronts; the
  agent must hold exactly one connect-proxy for it. -proxy-id names the
  proxy service itself.
`

// Files the command writes in -cert-dir.
const (
	leafFile  = "leaf.pem"
	keyFile   = "leaf-key.pem"
	rootsFile = "roots.pem"
)

func grpcBootstrapCommand(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var h cliflags.HTTP
	fs := cliflags.NewFlagSet("connect grpc-bootstrap")
	h.Flags(fs)
	grpcAddr := grpcAddrFlag(fs)
	sidecarFor := fs.String("sidecar-for", "", "The `ID` of the service whose sidecar proxy the gRPC application replaces.")
	proxyID := fs.String("proxy-id", "", "The `ID` of the connect-proxy service the gRPC application identifies as.")
	certDir := fs.String("cert-dir", "", "The `directory` to write the certificate, key and roots to (created if missing).")
	if code, ok := cliflags.Parse(fs, args, grpcBootstrapHelp, stdout, stderr); !ok {
		return code
	}
	if !cliflags.NoArgs(fs, stderr) {
		return 1
	}
	if err := checkProxyNamed(*sidecarFor, *proxyID); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if *certDir == "" {
		fmt.Fprintln(stderr, "-cert-dir must be set")
		return 1
	}
	dir, err := filepath.Abs(*certDir)
	if err != nil {
		fmt.Fprintf(stderr, "Invalid -cert-dir %q: %v\n", *certDir, err)
		return 1
	}
	agent := grpcAddrOf(*grpcAddr)
	if _, err := agentAddress(agent); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}

	client, done, ok := h.Connect(ctx, stderr)
	if !ok {
		return 1
	}
	defer done()
	var svc *api.AgentService
	if *sidecarFor != "" {
		svc, err = lookupSidecar(client, *sidecarFor)
	} else {
		svc, err = lookupProxy(client, *proxyID)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if svc.Proxy == nil || svc.Proxy.DestinationServiceName == "" {
		fmt.Fprintf(stderr, "Proxy %s names no destination service\n", svc.ID)
		return 1
	}
	dest := svc.Proxy.DestinationServiceName
	leaf, _, err := client.Agent().ConnectCALeaf(dest, h.QueryOptions())
	if err != nil {
		return cliflags.Report(stderr, "Error fetching the leaf certificate of "+dest, err)
	}
	roots, _, err := client.Agent().ConnectCARoots(h.QueryOptions())
	if err != nil {
		return cliflags.Report(stderr, "Error fetching the CA roots", err)
	}
	if err := writeCerts(dir, leaf, roots); err != nil {
		fmt.Fprintf(stderr, "Error writing the certificates: %v\n", err)
		return 1
	}
	out, err := json.MarshalIndent(grpcBootstrap(svc.ID, svc.Service, agent, dir), "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "Error encoding the bootstrap: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, string(out))
	return 0
}

// writeCerts writes the leaf, its key and the roots (active first) to
// dir, each file replaced whole (written aside, then renamed), so that
// gRPC's file watcher never reads half a file.
func writeCerts(dir string, leaf *api.LeafCert, roots *api.CARootList) error {
	if leaf.CertPEM == "" || leaf.PrivateKeyPEM == "" {
		return fmt.Errorf("the agent returned no leaf certificate")
	}
	var pems []string
	for _, r := range roots.Roots {
		if r.Active {
			pems = append([]string{strings.TrimSpace(r.RootCertPEM)}, pems...)
		} else {
			pems = append(pems, strings.TrimSpace(r.RootCertPEM))
		}
	}
	if len(pems) == 0 {
		return fmt.Errorf("the agent returned no CA roots")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, f := range []struct {
		name, data string
		mode       os.FileMode
	}{
		{leafFile, leaf.CertPEM, 0o644},
		{keyFile, leaf.PrivateKeyPEM, 0o600},
		{rootsFile, strings.Join(pems, "\n") + "\n", 0o644},
	} {
		if err := writeFileAtomic(filepath.Join(dir, f.name), []byte(f.data), f.mode); err != nil {
			return err
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// The bootstrap's JSON, gRPC's format (gRFC A27, A29): one plaintext xDS
// server, the node, and the certificate provider the clusters name.
type (
	grpcBootstrapJSON struct {
		XDSServers           []xdsServerJSON             `json:"xds_servers"`
		Node                 nodeJSON                    `json:"node"`
		CertificateProviders map[string]certProviderJSON `json:"certificate_providers"`
	}
	xdsServerJSON struct {
		ServerURI      string        `json:"server_uri"`
		ChannelCreds   []channelCred `json:"channel_creds"`
		ServerFeatures []string      `json:"server_features"`
	}
	channelCred struct {
		Type string `json:"type"`
	}
	nodeJSON struct {
		ID      string `json:"id"`
		Cluster string `json:"cluster"`
	}
	certProviderJSON struct {
		PluginName string          `json:"plugin_name"`
		Config     fileWatcherJSON `json:"config"`
	}
	fileWatcherJSON struct {
		CertificateFile   string `json:"certificate_file"`
		PrivateKeyFile    string `json:"private_key_file"`
		CACertificateFile string `json:"ca_certificate_file"`
		RefreshInterval   string `json:"refresh_interval"`
	}
)

// grpcBootstrap is the bootstrap of a gRPC application identifying as the
// proxy service with ID id and name service, served by the agent at
// agent, with its certificates in dir.
func grpcBootstrap(id, service, agent, dir string) grpcBootstrapJSON {
	return grpcBootstrapJSON{
		XDSServers: []xdsServerJSON{{
			ServerURI:    agent,
			ChannelCreds: []channelCred{{Type: "insecure"}},
			// Only xDS v3 exists; gRPC no longer needs the feature, older
			// releases did.
			ServerFeatures: []string{"xds_v3"},
		}},
		Node: nodeJSON{ID: id, Cluster: service},
		CertificateProviders: map[string]certProviderJSON{
			generate.ProxylessCertProvider: {PluginName: "file_watcher", Config: fileWatcherJSON{
				CertificateFile:   filepath.Join(dir, leafFile),
				PrivateKeyFile:    filepath.Join(dir, keyFile),
				CACertificateFile: filepath.Join(dir, rootsFile),
				// gRPC's default is an hour: a leaf rewritten by running
				// the command again is taken up within a minute.
				RefreshInterval: "60s",
			}},
		},
	}
}
