# watchfolder — see README.md. Needs only Go, make and git.
SHELL := /bin/bash
GO ?= go
BIN := $(CURDIR)/.bin
# Pinned versions of the real servers the tests and the demo run.
MINIO_MODULE  := github.com/minio/minio
MINIO_VERSION := v0.0.0-20260212201848-7aac2a2c5b7c
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

PREFIX ?= /usr/local
DESTDIR ?=

.PHONY: all build test test-deps vet demo clean install bench torture

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

# The status page's browser tests drive Debian's chromium (web/).
.PHONY: chromium
test-deps: chromium
chromium:
	@./scripts/apt-deps.sh chromium

vet:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt needed: $$unformatted"; exit 1; fi
	$(GO) vet ./...

test: test-deps vet
	$(GO) test -race -count=1 -timeout 20m ./...

demo: test-deps build
	@./scripts/demo.sh

# Benchmarks against mc and rclone (see bench/README.md, docs/benchmarks.md).
bench: test-deps build
	./bench/run.sh

# The long reliability suite: crash torture, injected faults, fuzzing.
torture: test-deps
	./torture/run.sh

install: build
	install -Dm0755 watchfolder $(DESTDIR)$(PREFIX)/bin/watchfolder
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed 's#^ExecStart=/usr/bin/watchfolder #ExecStart=$(PREFIX)/bin/watchfolder #' systemd/watchfolder.service \
		> $(DESTDIR)$(PREFIX)/lib/systemd/system/watchfolder.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/watchfolder.service
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
	./watchfolder completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/watchfolder
	./watchfolder completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_watchfolder
	./watchfolder completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/watchfolder.fish
	install -Dm0644 systemd/watchfolder.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/watchfolder.conf
	install -Dm0644 systemd/watchfolder.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/watchfolder.conf
	install -Dm0644 config.example.toml $(DESTDIR)$(PREFIX)/share/doc/watchfolder/config.example.toml
	install -Dm0644 README.md $(DESTDIR)$(PREFIX)/share/doc/watchfolder/README.md
	@if [ ! -e $(DESTDIR)/etc/watchfolder/config.toml ]; then \
		install -Dm0640 config.example.toml $(DESTDIR)/etc/watchfolder/config.toml; fi

clean:
	rm -rf watchfolder .demo
