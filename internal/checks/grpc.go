package checks

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// grpcProbe calls grpc.health.v1.Health/Check. The check's address is
// "host:port" or "host:port/service"; with no service the server's overall
// health is asked for.
type grpcProbe struct {
	target  string // as configured, for output
	addr    string
	service string
	creds   credentials.TransportCredentials
	timeout time.Duration
}

func newGRPCProbe(def *structs.CheckType, timeout time.Duration) *grpcProbe {
	addr, service, _ := strings.Cut(def.GRPC, "/")
	creds := insecure.NewCredentials()
	if def.GRPCUseTLS {
		creds = credentials.NewTLS(&tls.Config{
			InsecureSkipVerify: def.TLSSkipVerify, //nolint:gosec // the check definition asks for it
			ServerName:         def.TLSServerName,
		})
	}
	return &grpcProbe{target: def.GRPC, addr: addr, service: service, creds: creds, timeout: timeout}
}

func (p *grpcProbe) probe(ctx context.Context) (string, string) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()

	// A connection per run, like the HTTP check: the probe sees what a new
	// client would, and nothing is held between runs. passthrough hands the
	// address to the dialer as given, without a resolver of its own.
	conn, err := grpc.NewClient("passthrough:///"+p.addr, grpc.WithTransportCredentials(p.creds))
	if err != nil {
		return structs.HealthCritical, fmt.Sprintf("gRPC check %s: %v", p.target, err)
	}
	defer conn.Close()

	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: p.service})
	if err != nil {
		return structs.HealthCritical, fmt.Sprintf("gRPC check %s: %v", p.target, err)
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return structs.HealthCritical, fmt.Sprintf("gRPC check %s: serving status %s", p.target, s)
	}
	return structs.HealthPassing, fmt.Sprintf("gRPC check %s: success", p.target)
}

func (p *grpcProbe) close() {}
