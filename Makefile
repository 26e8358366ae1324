# Paddock build, generate and test targets. Run `make help` for a list.
SHELL := /bin/bash
GO ?= go
BIN ?= bin/paddock
TOOLS := $(CURDIR)/.tools
PROTOC_GEN_GO := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_CONNECT_GO := connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.21.1
OAPI_CODEGEN := github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2
# The binary is static so the same file runs on the host and, bind-mounted,
# inside every sandbox whatever libc the template has.
BUILD_TAGS := seccomp osusergo netgo
LDFLAGS := -s -w -linkmode external -extldflags "-static"

.PHONY: help setup run build generate test test-go test-sdk vet fmt clean bench

help:
	@echo "make setup      install what Paddock needs (Debian packages, Node.js) and build it"
	@echo "make run        setup, then run paddock serve on 127.0.0.1:3000 (data in /var/lib/paddock)"
	@echo "make build      build $(BIN) (static, cgo, seccomp; embeds the in-sandbox binary cmd/paddock-guest)"
	@echo "make generate   regenerate Go code from api/ (protoc + protoc-gen-go + protoc-gen-connect-go; oapi-codegen)"
	@echo "make test       go vet + Go tests (race) + SDK tests; what .ci/run runs"
	@echo "make test-go    Go tests only"
	@echo "make test-sdk   the official E2B SDK suites (test/sdk) against the real binary"
	@echo "make bench      benchmarks vs baselines (bench/); writes bench/RESULTS.md; never part of test"

setup:
	scripts/setup.sh

run: setup
	bin/paddock serve $(SERVE_FLAGS)

# First the slim in-sandbox binary (envd, codeinterp; pure Go, static) and
# the small container init (libcontainer's init only; cgo, static), both
# embedded into paddock with the guestbin tag: sandboxes start the first as
# envd, the local runtime runs the second as every container's init.
build:
	CGO_ENABLED=0 $(GO) build -tags 'osusergo netgo' -ldflags '-s -w' -o internal/guest/paddock-guest ./cmd/paddock-guest
	CGO_ENABLED=1 $(GO) build -tags '$(BUILD_TAGS)' -ldflags '$(LDFLAGS)' -o cmd/paddock/paddock-init ./cmd/paddock-init
	CGO_ENABLED=1 $(GO) build -tags '$(BUILD_TAGS) guestbin' -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/paddock

generate:
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_GO)
	GOBIN=$(TOOLS) $(GO) install $(PROTOC_GEN_CONNECT_GO)
	protoc -I api/envd \
		--plugin=protoc-gen-go=$(TOOLS)/protoc-gen-go \
		--plugin=protoc-gen-connect-go=$(TOOLS)/protoc-gen-connect-go \
		--go_out=api/envd --go_opt=paths=source_relative \
		--connect-go_out=api/envd --connect-go_opt=paths=source_relative \
		process/process.proto filesystem/filesystem.proto
	$(GO) run $(OAPI_CODEGEN) -config internal/platform/api/config.yaml api/openapi.yaml

vet:
	$(GO) vet -tags '$(BUILD_TAGS)' ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1; }

test: vet build test-go test-sdk

test-go:
	$(GO) test -tags '$(BUILD_TAGS)' -race -count=1 ./...

test-sdk: build
	test/sdk/run.sh

# Benchmarks measure, they never assert; not part of test/CI. BENCH_QUICK=1
# for small counts (see bench/README.md).
bench:
	bench/run.sh

clean:
	rm -rf bin .tools
