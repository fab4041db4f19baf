# clawmatrix — build, check and test. `make test` is what CI runs.
GO      ?= go
BIN     := bin/clawmatrix-plugin
PREFIX  ?= $(HOME)/.local
GOFILES := $(shell git ls-files '*.go' 2>/dev/null)

# The release version is package.json's "version", nowhere else; builds
# stamp it and the commit into the binary (internal/buildinfo).
VERSION := $(shell sed -n 's/^  "version": "\([^"]*\)",$$/\1/p' package.json)
COMMIT  := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo -dirty)
STAMP   := github.com/clawmatrix/clawmatrix/internal/buildinfo
LDFLAGS := -X $(STAMP).version=$(VERSION) -X $(STAMP).commit=$(COMMIT)

.PHONY: build install version-known plugin npm test check unit e2e demo bench generate clean

build: version-known
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/clawmatrix-plugin

# Installs the sidecar where the OpenClaw adapter looks for it (on PATH).
install: version-known
	mkdir -p $(PREFIX)/bin
	$(GO) build -ldflags "$(LDFLAGS)" -o $(PREFIX)/bin/clawmatrix-plugin ./cmd/clawmatrix-plugin
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

version-known:
	@test -n "$(VERSION)" || { echo 'cannot read "version" from package.json (a line `  "version": "X.Y.Z",`)'; exit 1; }

# Builds the npm packages into dist/npm: one per platform (linux-x64,
# linux-arm64, darwin-x64, darwin-arm64) holding only its binary, built with
# CGO_ENABLED=0 -trimpath, and @clawmatrix/openclaw-plugin, which lists them.
# Reproducible: the same commit and Go release give the same bytes
# (dist/npm/SHA256SUMS). Publish the platform packages first.
npm:
	$(GO) run ./scripts/npmpack -go $(GO) -out dist/npm

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

# The status page test runs in headless Chromium (installed here when
# missing) and leaves its screenshots in test-output/.
unit:
	bash scripts/install-chromium.sh
	CLAWMATRIX_REQUIRE_BROWSER=1 CLAWMATRIX_SCREENSHOTS=$(CURDIR)/test-output $(GO) test -race -count=1 -timeout 20m ./...

e2e:
	bash scripts/install-openclaw.sh
	bash scripts/install-verdaccio.sh
	$(GO) test -tags e2e -count=1 -timeout 25m -v ./e2e/

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
