// Package bench holds Trellis's benchmarks, which report figures and
// assert nothing about them. cmd/load measures a built agent on loopback
// against Consul 1.22's figures (run.sh, results.md), and with `load
// cluster` three servers against Consul 0.7.1's (cluster.sh,
// results-cluster.md); inproc_test.go drives an in-process agent so that
// `go test -bench` can CPU-profile the server (profile.sh); dataplane/
// measures the sidecar pair with fortio against direct and HAProxy paths
// (dataplane/run.sh, results-dataplane.md). See README.md.
package bench
