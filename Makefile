# clawmatrix — build, check and test. `make test` is what CI runs.
GO      ?= go
BIN     := bin/clawmatrix-plugin
PREFIX  ?= $(HOME)/.local
GOFILES := $(shell git ls-files '*.go' 2>/dev/null)

.PHONY: build install test check unit e2e demo bench generate clean

build:
	$(GO) build -o $(BIN) ./cmd/clawmatrix-plugin

# Installs the sidecar where the OpenClaw adapter looks for it (on PATH).
install:
	mkdir -p $(PREFIX)/bin
	$(GO) build -o $(PREFIX)/bin/clawmatrix-plugin ./cmd/clawmatrix-plugin
	@echo "installed $(PREFIX)/bin/clawmatrix-plugin (make sure $(PREFIX)/bin is on the gateway's PATH, or set CLAWMATRIX_BIN)"

test: check unit e2e

check:
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/
	@command -v node >/dev/null || { echo "node is needed for the adapter tests (index.test.js): install Node.js 20 or later"; exit 1; }
	node --test index.test.js
	@$(GO) run ./cmd/clawmatrix-plugin manifest | cmp -s - openclaw.plugin.json || { echo "openclaw.plugin.json is stale: run 'make generate'"; exit 1; }
	@$(GO) run ./cmd/clawmatrix-plugin tools | cmp -s - openclaw.tools.json || { echo "openclaw.tools.json is stale: run 'make generate'"; exit 1; }

unit:
	$(GO) test -race -count=1 -timeout 20m ./...

e2e:
	bash scripts/install-openclaw.sh
	$(GO) test -tags e2e -count=1 -timeout 15m -v ./e2e/

demo:
	$(GO) run ./cmd/clawmatrix-plugin demo

bench:
	$(GO) run ./cmd/clawmatrix-plugin bench

# Regenerates the committed files derived from the Go types.
generate:
	$(GO) run ./cmd/clawmatrix-plugin manifest > openclaw.plugin.json
	$(GO) run ./cmd/clawmatrix-plugin tools > openclaw.tools.json

clean:
	rm -rf bin
