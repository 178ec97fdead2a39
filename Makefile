# Trellis: the two commands that matter are `make dev` (run a dev agent)
# and `make test` (everything CI runs).
GO ?= go

.PHONY: dev build test unit partition e2e deps bench lint demo

dev:
	$(GO) run ./cmd/trellis agent -dev

# The mesh in one minute: two services, their sidecars and an intention.
demo:
	./scripts/demo.sh

build:
	CGO_ENABLED=0 $(GO) build -o bin/trellis ./cmd/trellis

deps:
	./scripts/install-test-deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

# A 3-server cluster cut in two with network namespaces; needs root and
# iproute2 (make deps). Tagged netns, so `go test ./...` leaves it out.
partition:
	$(GO) vet -tags netns ./tests/partition
	$(GO) test -race -count=1 -tags netns -timeout 10m ./tests/partition

e2e:
	./tests/e2e/run.sh

test: deps lint unit partition e2e

bench:
	./bench/run.sh
	./bench/cluster.sh
	./bench/connect.sh
