# clawmatrix — build, check and test. `make test` is what CI runs.
GO      ?= go
BIN     := bin/clawmatrix-plugin
PREFIX  ?= $(HOME)/.local
GOFILES := $(shell git ls-files '*.go' 2>/dev/null)

.PHONY: build install plugin test check unit e2e demo bench generate clean

build:
	$(GO) build -o $(BIN) ./cmd/clawmatrix-plugin

# Installs the sidecar where the OpenClaw adapter looks for it (on PATH).
install:
	mkdir -p $(PREFIX)/bin
	$(GO) build -o $(PREFIX)/bin/clawmatrix-plugin ./cmd/clawmatrix-plugin
	@echo "installed $(PREFIX)/bin/clawmatrix-plugin (make sure $(PREFIX)/bin is on the gateway's PATH, or set CLAWMATRIX_BIN)"

# Stages the OpenClaw plugin package (exactly what `npm pack` ships: package.json
# and its "files") in dist/clawmatrix, to install with `openclaw plugins install`.
# The checkout itself is not a good plugin folder: OpenClaw copies the folder on
# every load, and a checkout holds bin/ and .cache/.
plugin:
	rm -rf dist/clawmatrix dist/package && mkdir -p dist
	npm pack --silent --pack-destination dist > dist/.packed
	tar -xzf dist/$$(tail -n1 dist/.packed) -C dist && mv dist/package dist/clawmatrix
	rm -f dist/$$(tail -n1 dist/.packed) dist/.packed
	@echo "staged dist/clawmatrix; install it with: openclaw plugins install $(CURDIR)/dist/clawmatrix --force --accept-capabilities"

test: check unit e2e

check:
	@bash scripts/check-commits.sh
	@GO=$(GO) bash scripts/check-deps.sh
	@out=$$(gofmt -l $(GOFILES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e/
	@command -v node >/dev/null || { echo "node is needed for the adapter tests (test/*.test.js): install Node.js 20 or later"; exit 1; }
	node --test test/*.test.js
	@$(GO) run ./cmd/clawmatrix-plugin manifest | cmp -s - openclaw.plugin.json || { echo "openclaw.plugin.json is stale: run 'make generate'"; exit 1; }
	@$(GO) run ./cmd/clawmatrix-plugin tools | cmp -s - openclaw.tools.json || { echo "openclaw.tools.json is stale: run 'make generate'"; exit 1; }

unit:
	$(GO) test -race -count=1 -timeout 20m ./...

e2e:
	bash scripts/install-openclaw.sh
	$(GO) test -tags e2e -count=1 -timeout 15m -v ./e2e/

demo:
	$(GO) run ./cmd/clawmatrix-plugin demo

# The bench starts nodes as clawmatrix-plugin processes: it finds the binary
# beside its own. BENCH_FLAGS passes flags, e.g. make bench BENCH_FLAGS=--quick.
bench:
	$(GO) build -o bin/ ./cmd/clawmatrix-plugin ./cmd/clawmatrix-bench
	bin/clawmatrix-bench $(BENCH_FLAGS)

# Regenerates the committed files derived from the Go types.
generate:
	$(GO) run ./cmd/clawmatrix-plugin manifest > openclaw.plugin.json
	$(GO) run ./cmd/clawmatrix-plugin tools > openclaw.tools.json

clean:
	rm -rf bin dist
