package checks

import (
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// startHealthServer serves grpc.health.v1 on a loopback port: the server as a
// whole is SERVING, "web" is SERVING, "db" is NOT_SERVING.
func startHealthServer(t *testing.T, opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("web", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("db", healthpb.HealthCheckResponse_NOT_SERVING)
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, hs)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return ln.Addr().String()
}

func TestGRPC(t *testing.T) {
	addr := startHealthServer(t)
	down := closedAddr(t)
	tests := []struct {
		name, target, wantStatus, wantOutput string
	}{
		{"server serving", addr, structs.HealthPassing, "gRPC check " + addr + ": success"},
		{"service serving", addr + "/web", structs.HealthPassing, "gRPC check " + addr + "/web: success"},
		{"service not serving", addr + "/db", structs.HealthCritical, "gRPC check " + addr + "/db: serving status NOT_SERVING"},
		{"unknown service", addr + "/nope", structs.HealthCritical, "NotFound"},
		{"server down", down, structs.HealthCritical, "gRPC check " + down + ": "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			n := newFakeNotifier(t)
			start(t, "g", &structs.CheckType{GRPC: tt.target, Interval: dur(testInterval)}, Options{Notify: n})
			got := n.next(t)
			if got.status != tt.wantStatus {
				t.Errorf("status = %s (%s), want %s", got.status, got.output, tt.wantStatus)
			}
			wantContains(t, got.output, tt.wantOutput)
		})
	}
}

func TestGRPCTLS(t *testing.T) {
	// Borrow httptest's self-signed certificate.
	certSrv := httptest.NewUnstartedServer(http.NotFoundHandler())
	certSrv.StartTLS()
	certs := certSrv.TLS.Certificates
	certSrv.Close()
	addr := startHealthServer(t, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: certs})))

	tests := []struct {
		name       string
		def        structs.CheckType
		wantStatus string
	}{
		{"skip verify", structs.CheckType{GRPCUseTLS: true, TLSSkipVerify: true}, structs.HealthPassing},
		{"verify fails", structs.CheckType{GRPCUseTLS: true}, structs.HealthCritical},
		{"plaintext to TLS server", structs.CheckType{}, structs.HealthCritical},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			def := tt.def
			def.GRPC = addr
			def.Interval = dur(testInterval)
			def.Timeout = dur(2 * time.Second)
			n := newFakeNotifier(t)
			start(t, "g", &def, Options{Notify: n})
			got := n.next(t)
			if got.status != tt.wantStatus {
				t.Errorf("status = %s (%s), want %s", got.status, got.output, tt.wantStatus)
			}
		})
	}
}
