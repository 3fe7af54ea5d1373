# One entry point: `make run` starts the proxy from config/default.yaml,
# `make test` runs every check and test. Both install what is missing first.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help deps certs run build lint rust-test integration-test test bench

help:
	@echo "make run   - build and run the zero-code proxy with config/default.yaml"
	@echo "make test  - lints, Rust tests and the TypeScript integration tests"
	@echo "make bench - side-by-side benchmarks against nginx, HAProxy, Squid and Caddy (benches/)"

deps:
	@scripts/install-deps.sh

certs: deps
	@scripts/dev-cert.sh

run: deps certs
	$(CARGO) run --release -p proxy --bin oxy -- --config config/default.yaml

build: deps
	$(CARGO) build --workspace --bins

lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@for crate in openssl-sys native-tls; do \
	  if $(CARGO) tree --workspace -i $$crate -e normal 2>/dev/null | grep -q $$crate; then \
	    echo "$$crate is in the dependency tree: only BoringSSL (and rustls) may be linked"; exit 1; \
	  fi; \
	done

rust-test: deps
	$(CARGO) test --workspace

integration-test: build certs
	cd integration-tests && npm ci --no-audit --no-fund \
	  && { [ -x .venv/bin/python ] || python3 -m venv .venv; } \
	  && .venv/bin/pip install -q --disable-pip-version-check -r interop/requirements.txt \
	  && npm test

test: lint rust-test integration-test

bench:
	benches/run
