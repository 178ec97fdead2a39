// Command leafsign measures how many Connect leaf certificates the leader
// signs per second: an in-process server with connect on sets its CA up,
// then workers hand it CSRs made beforehand, so the figure is the
// leader's part alone (CSR parse and checks, signing, encoding). Making
// the agents' keys and CSRs is timed apart and reported on its own. It
// prints markdown table rows; nothing passes or fails on timing.
//
//	go run ./bench/cmd/leafsign                      # ec P-256 root, 10s
//	go run ./bench/cmd/leafsign -key-type rsa -key-bits 2048 -duration 5s
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trellis-mesh/trellis/internal/connect"
	"github.com/trellis-mesh/trellis/internal/server"
	"github.com/trellis-mesh/trellis/internal/state"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("leafsign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	workers := fs.Int("workers", runtime.GOMAXPROCS(0), "concurrent signers")
	duration := fs.Duration("duration", 10*time.Second, "how long to sign")
	csrs := fs.Int("csrs", 2000, "distinct CSRs made beforehand (reused round robin)")
	keyType := fs.String("key-type", "ec", "root key type: ec or rsa")
	keyBits := fs.Int("key-bits", 0, "root key size (0: the type's default)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	caCfg := map[string]any{"PrivateKeyType": *keyType}
	if *keyBits != 0 {
		caCfg["PrivateKeyBits"] = *keyBits
	}
	srv, err := server.New(server.Config{NodeID: "00000000-0000-0000-0000-000000000001", NodeName: "bench",
		ConnectCA: &server.ConnectCAOptions{Datacenter: "dc1", Config: caCfg}}, state.New())
	if err != nil {
		fmt.Fprintf(stderr, "leafsign: start server: %v\n", err)
		return 1
	}
	defer srv.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.WaitForLeader(ctx); err != nil {
		fmt.Fprintf(stderr, "leafsign: no leader: %v\n", err)
		return 1
	}
	var clusterID string
	for clusterID == "" {
		cfg, err := srv.ConnectCAConfiguration()
		if err == nil {
			clusterID = cfg.ClusterID
			break
		}
		if ctx.Err() != nil {
			fmt.Fprintf(stderr, "leafsign: CA not set up: %v\n", err)
			return 1
		}
		time.Sleep(10 * time.Millisecond) // polling for setup, not timing
	}

	// The agents' side: a P-256 key and a CSR each.
	type req struct{ service, csr string }
	reqs := make([]req, *csrs)
	start := time.Now()
	for i := range reqs {
		svc := fmt.Sprintf("svc-%d", i%50)
		id := connect.ServiceID{TrustDomain: connect.TrustDomain(clusterID), Datacenter: "dc1", Service: svc}
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URI()}}, key)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		reqs[i] = req{svc, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))}
	}
	csrRate := float64(len(reqs)) / time.Since(start).Seconds()

	var n, failed atomic.Int64
	var wg sync.WaitGroup
	deadline := time.Now().Add(*duration)
	start = time.Now()
	for w := range *workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; time.Now().Before(deadline); i += *workers {
				r := reqs[i%len(reqs)]
				if _, err := srv.ConnectCASign(r.csr, r.service); err != nil {
					failed.Add(1)
					continue
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if f := failed.Load(); f > 0 {
		fmt.Fprintf(stderr, "leafsign: %d signings failed\n", f)
		return 1
	}
	root := *keyType
	if *keyBits != 0 {
		root = fmt.Sprintf("%s %d", *keyType, *keyBits)
	}
	fmt.Fprintln(stdout, "| measure | figure | setup |")
	fmt.Fprintln(stdout, "|---|---|---|")
	fmt.Fprintf(stdout, "| leaf signings/s on the leader | %.0f | root %s, %d workers, GOMAXPROCS %d, %d signed in %v |\n",
		float64(n.Load())/elapsed.Seconds(), root, *workers, runtime.GOMAXPROCS(0), n.Load(), elapsed.Round(time.Millisecond))
	fmt.Fprintf(stdout, "| agent key + CSR made/s (one core) | %.0f | ecdsa P-256, reported apart |\n", csrRate)
	return 0
}
