// Package proxyless runs a proxyless gRPC client against the mesh as real
// processes: a dev agent, three instances of a gRPC service each behind
// its `trellis connect proxy` sidecar, and, in the test, a grpc-go client
// configured by `trellis connect grpc-bootstrap` that dials xds:///db
// over mTLS with no sidecar of its own.
package proxyless

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/trellis-mesh/trellis/tests/testbin"
)

var binary string

func TestMain(m *testing.M) {
	testbin.Main(m, func(path string) { binary = path })
}

func freePort(t *testing.T) int { return testbin.FreePort(t, "127.0.0.1") }

// start runs the binary with args until the test ends and returns the
// first submatch of each pattern as the process prints it.
func start(t *testing.T, args []string, patterns ...*regexp.Regexp) []string {
	t.Helper()
	_, got := testbin.Start(t, binary, args[0]+" "+args[1], args, patterns...)
	return got
}

// instanceService is a one-method gRPC service, Name, answering the
// instance's name; written by hand so that the test needs no generated
// code.
const nameMethod = "/trellis.test.Instance/Name"

type instance struct{ name string }

var instanceDesc = grpc.ServiceDesc{
	ServiceName: "trellis.test.Instance",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Name",
		Handler: func(srv any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			if err := dec(new(emptypb.Empty)); err != nil {
				return nil, err
			}
			return wrapperspb.String(srv.(*instance).name), nil
		},
	}},
}

// serveInstance runs a plaintext gRPC server named name on a free
// loopback port until the test ends (its sidecar terminates mTLS).
func serveInstance(t *testing.T, name string) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	s.RegisterService(&instanceDesc, &instance{name: name})
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(ln)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// The scenario: a grpc-go client whose bootstrap points at the
// agent, identifying as web's proxy, dials xds:///db and is balanced
// across db's healthy instances, over mTLS to their sidecars; an
// instance that turns critical stops getting calls, and gets them again
// once it passes.
func TestProxylessClientBalancesAcrossHealthyInstances(t *testing.T) {
	agent := start(t, []string{"agent", "-dev", "-node", "pl", "-client", "127.0.0.1", "-bind", "127.0.0.1",
		"-http-port", "0", "-dns-port", "-1", "-server-port", "0", "-serf-lan-port", "0", "-serf-wan-port", "0", "-grpc-port", "0",
		"-log-level", "warn"},
		regexp.MustCompile(`HTTP API: ([0-9.:]+)`), regexp.MustCompile(`gRPC \(xDS\): ([0-9.:]+)`))
	httpAddr, grpcAddr := agent[0], agent[1]
	c, err := api.NewClient(&api.Config{Address: httpAddr})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, _, err = c.ConfigEntries().Set(&api.ServiceConfigEntry{Kind: api.ServiceDefaults, Name: "db", Protocol: "grpc"}, nil)
	must(err)

	// Three db instances, each with a TTL check standing for the app's
	// health, and a sidecar that is healthy while it listens and while
	// its instance is (an alias check).
	names := []string{"db-1", "db-2", "db-3"}
	ready := regexp.MustCompile(`admin on http://(127\.0\.0\.1:[0-9]+)`)
	for _, id := range names {
		app, sidecar := serveInstance(t, id), freePort(t)
		must(c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: "db", Address: "127.0.0.1", Port: app,
			Check: &api.AgentServiceCheck{CheckID: id + "-app", Name: "app", TTL: "10m"},
			Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: sidecar, Checks: api.AgentServiceChecks{
				{Name: "listening", TCP: "127.0.0.1:" + strconv.Itoa(sidecar), Interval: "300ms"},
				{Name: "instance", AliasService: id},
			}}}}))
		must(c.Agent().UpdateTTL(id+"-app", "up", api.HealthPassing))
		start(t, []string{"connect", "proxy", "-sidecar-for", id, "-http-addr", httpAddr, "-grpc-addr", grpcAddr,
			"-admin-bind", "127.0.0.1:0"}, ready)
	}
	// web's sidecar is registered, never run: the gRPC client takes its
	// place, and its upstreams are what the client may dial.
	must(c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "web-1", Name: "web", Port: freePort(t),
		Connect: &api.AgentServiceConnect{SidecarService: &api.AgentServiceRegistration{Port: freePort(t),
			Proxy: &api.AgentServiceConnectProxyConfig{Upstreams: []api.Upstream{{DestinationName: "db", LocalBindPort: freePort(t)}}}}}}))

	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binary, "connect", "grpc-bootstrap", "-sidecar-for", "web-1", "-cert-dir", t.TempDir(),
		"-http-addr", httpAddr, "-grpc-addr", grpcAddr)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("grpc-bootstrap: %v\n%s", err, stderr.String())
	}

	resolver, err := xds.NewXDSResolverWithConfigForTesting(stdout.Bytes())
	must(err)
	// The fallback is used only when xDS sends no security: the sidecars
	// would then refuse the plaintext, and the test fail.
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	must(err)
	cc, err := grpc.NewClient("xds:///db", grpc.WithTransportCredentials(creds), grpc.WithResolvers(resolver))
	must(err)
	t.Cleanup(func() { cc.Close() })

	roots, _, err := c.Agent().ConnectCARoots(nil)
	must(err)
	dbID := "spiffe://" + roots.TrustDomain + "/ns/default/dc/dc1/svc/db"
	// calls makes n calls and counts the answers by instance; every
	// call must have reached db's sidecar over mTLS.
	calls := func(n int) (map[string]int, error) {
		got := map[string]int{}
		for range n {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			var p peer.Peer
			out := new(wrapperspb.StringValue)
			err := cc.Invoke(ctx, nameMethod, &emptypb.Empty{}, out, grpc.Peer(&p))
			cancel()
			if err != nil {
				return got, err
			}
			info, ok := p.AuthInfo.(credentials.TLSInfo)
			if !ok || info.SPIFFEID == nil || info.SPIFFEID.String() != dbID {
				return got, fmt.Errorf("call answered by %v over %T (SPIFFE ID %v), want mTLS with %s", p.Addr, p.AuthInfo, info.SPIFFEID, dbID)
			}
			got[out.Value]++
		}
		return got, nil
	}
	answered := func(got map[string]int) string {
		var ks []string
		for k := range got {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		return strings.Join(ks, " ")
	}
	expect := func(what, want string) {
		t.Helper()
		testbin.Eventually(t, what, func() error {
			got, err := calls(30)
			if err != nil {
				return err
			}
			if answered(got) != want {
				return fmt.Errorf("30 calls answered by %v, want %s", got, want)
			}
			return nil
		})
	}

	expect("all three instances answer", "db-1 db-2 db-3")

	must(c.Agent().UpdateTTL("db-2-app", "down", api.HealthCritical))
	expect("the critical instance stops getting calls", "db-1 db-3")
	// Once gone it stays gone.
	got, err := calls(30)
	must(err)
	if got["db-2"] != 0 {
		t.Fatalf("the critical instance answered again: %v", got)
	}

	must(c.Agent().UpdateTTL("db-2-app", "up", api.HealthPassing))
	expect("the instance gets calls again once it passes", "db-1 db-2 db-3")
}
