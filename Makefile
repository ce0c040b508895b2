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

.PHONY: all build test test-deps vet demo clean install bench torture package debian-root

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o watchfolder ./cmd/watchfolder

# make package: a static binary and .deb/.rpm packages in dist/ (nfpm, run
# from the packaging/ module where it is pinned).
DIST := $(CURDIR)/dist
ARCH ?= $(shell $(GO) env GOARCH)
PKG_VERSION = $(shell packaging/version.sh '$(VERSION)')

package:
	rm -rf $(DIST) && mkdir -p $(DIST)/completions
	CGO_ENABLED=0 GOARCH=$(ARCH) $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(DIST)/watchfolder ./cmd/watchfolder
	@# Completions and the man page come from the binary itself (a host build
	@# when cross-building).
	if [ "$(ARCH)" = "$$($(GO) env GOHOSTARCH)" ]; then cp $(DIST)/watchfolder $(DIST)/host-watchfolder; \
	else $(GO) build -o $(DIST)/host-watchfolder ./cmd/watchfolder; fi
	$(DIST)/host-watchfolder completion bash > $(DIST)/completions/watchfolder.bash
	$(DIST)/host-watchfolder completion zsh > $(DIST)/completions/_watchfolder
	$(DIST)/host-watchfolder completion fish > $(DIST)/completions/watchfolder.fish
	$(DIST)/host-watchfolder man | gzip -9n > $(DIST)/watchfolder.1.gz
	rm -f $(DIST)/host-watchfolder
	cd packaging && VERSION='$(PKG_VERSION)' ARCH=$(ARCH) DIST=$(DIST) $(GO) run ./nfpmbuild -out $(DIST) deb rpm

# Tools are rebuilt when their pinned version changes (the stamp file records it).
$(BIN)/minio.$(MINIO_VERSION):
	@mkdir -p $(BIN)
	@echo "installing MinIO $(MINIO_VERSION) into .bin/ (first time takes a few minutes)"
	GOBIN=$(BIN) GOFLAGS=-buildvcs=false $(GO) install $(MINIO_MODULE)@$(MINIO_VERSION)
	@rm -f $(BIN)/minio.v* && touch $@

# The systemd test boots a minimal Debian root built by debootstrap (cached
# under ~/.cache/watchfolder, outside the tree); it reads the .rpm with rpm.
debian-root:
	@./scripts/apt-deps.sh debootstrap rpm
	@./scripts/debian-root.sh >/dev/null

test-deps: $(BIN)/minio.$(MINIO_VERSION) debian-root

# The status page's browser tests drive Debian's chromium (web/).
.PHONY: chromium
test-deps: chromium
chromium:
	@./scripts/apt-deps.sh chromium

# ffmpeg encodes the real media the probe's tests check (Debian package).
.PHONY: media-deps
test-deps: media-deps
media-deps:
	@./scripts/apt-deps.sh ffmpeg

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

# make install: the same files as the packages, for a server without them.
# Run as root; the service user and group are created like the packages do.
install: build
	install -Dm0755 watchfolder $(DESTDIR)$(PREFIX)/bin/watchfolder
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	sed 's#^ExecStart=/usr/bin/watchfolder #ExecStart=$(PREFIX)/bin/watchfolder #' systemd/watchfolder.service \
		> $(DESTDIR)$(PREFIX)/lib/systemd/system/watchfolder.service
	chmod 0644 $(DESTDIR)$(PREFIX)/lib/systemd/system/watchfolder.service
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/zsh/site-functions $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d $(DESTDIR)$(PREFIX)/share/man/man1
	./watchfolder completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/watchfolder
	./watchfolder completion zsh > $(DESTDIR)$(PREFIX)/share/zsh/site-functions/_watchfolder
	./watchfolder completion fish > $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/watchfolder.fish
	./watchfolder man | gzip -9n > $(DESTDIR)$(PREFIX)/share/man/man1/watchfolder.1.gz
	install -Dm0644 systemd/watchfolder.sysusers $(DESTDIR)$(PREFIX)/lib/sysusers.d/watchfolder.conf
	install -Dm0644 systemd/watchfolder.tmpfiles $(DESTDIR)$(PREFIX)/lib/tmpfiles.d/watchfolder.conf
	install -Dm0644 config.example.toml $(DESTDIR)$(PREFIX)/share/doc/watchfolder/config.example.toml
	install -Dm0644 README.md $(DESTDIR)$(PREFIX)/share/doc/watchfolder/README.md
	@if [ -z "$(DESTDIR)" ]; then \
		if command -v systemd-sysusers >/dev/null; then systemd-sysusers $(PREFIX)/lib/sysusers.d/watchfolder.conf; \
		else getent group watchfolder >/dev/null || groupadd --system watchfolder; \
			getent passwd watchfolder >/dev/null || useradd --system --gid watchfolder --home-dir /var/lib/watchfolder --no-create-home --shell /usr/sbin/nologin watchfolder; fi; \
		install -d -m0750 -o root -g watchfolder /etc/watchfolder; \
		if [ ! -e /etc/watchfolder/config.toml ]; then install -m0640 -o root -g watchfolder packaging/config.toml /etc/watchfolder/config.toml; fi; \
		if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi; \
	else \
		install -d -m0750 $(DESTDIR)/etc/watchfolder; \
		if [ ! -e $(DESTDIR)/etc/watchfolder/config.toml ]; then install -m0640 packaging/config.toml $(DESTDIR)/etc/watchfolder/config.toml; fi; \
		echo "note: with DESTDIR, give /etc/watchfolder and its config.toml the group watchfolder when installing for real"; \
	fi

clean:
	rm -rf watchfolder .demo dist
