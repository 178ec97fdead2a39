# Trellis: the two commands that matter are `make dev` (run a dev agent)
# and `make test` (everything CI runs).
GO ?= go

.PHONY: dev build test unit e2e deps bench lint

dev:
	$(GO) run ./cmd/trellis agent -dev

build:
	$(GO) build -o bin/trellis ./cmd/trellis

deps:
	./scripts/install-test-deps.sh

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 15m ./...

e2e:
	./tests/e2e/run.sh

test: deps lint unit e2e

bench:
	./bench/run.sh
	./bench/cluster.sh
