package checks

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/trellis-mesh/trellis/internal/structs"
)

// tcpProbe passes when a TCP connection to addr opens within the timeout.
type tcpProbe struct {
	addr    string
	timeout time.Duration
}

func (p *tcpProbe) probe(ctx context.Context) (string, string) {
	d := net.Dialer{Timeout: p.timeout}
	conn, err := d.DialContext(ctx, "tcp", p.addr)
	if err != nil {
		return structs.HealthCritical, err.Error()
	}
	conn.Close()
	return structs.HealthPassing, fmt.Sprintf("TCP connect %s: Success", p.addr)
}

func (p *tcpProbe) close() {}
