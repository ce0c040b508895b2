# watchfolder — see README.md. Needs only Go, make and git.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/.bin
# Pinned versions of the real servers the tests and the demo run.
MINIO_MODULE  := github.com/minio/minio
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build test test-deps vet demo clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o watchfolder ./cmd/watchfolder

# Tools are rebuilt when their pinned version changes (the stamp file records it).
$(BIN)/minio.$(MINIO_VERSION):
	@mkdir -p $(BIN)
	@echo "installing MinIO $(MINIO_VERSION) into .bin/ (first time takes a few minutes)"
	GOBIN=$(BIN) GOFLAGS=-buildvcs=false $(GO) install $(MINIO_MODULE)@$(MINIO_VERSION)
	@rm -f $(BIN)/minio.v* && touch $@

test-deps: $(BIN)/minio.$(MINIO_VERSION)

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

test: test-deps vet
	$(GO) test -race -timeout 20m ./...

demo: test-deps build
	@./scripts/demo.sh

clean:
	rm -rf watchfolder .demo
