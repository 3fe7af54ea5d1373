# One entry point: `make run` starts the proxy from config/default.yaml,
# `make test` runs every check and test. Both install what is missing first.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help deps certs run build lint rust-test integration-test test bench bench-quick fuzz

help:
	@echo "make run   - build and run the zero-code proxy with config/default.yaml"
	@echo "make test  - lints, Rust tests and the TypeScript integration tests"
	@echo "make bench - side-by-side benchmarks against nginx, HAProxy, h2o, Squid and Caddy (benches/)"
	@echo "make bench-quick - the key rows and ratios in under 2 minutes after the build, before merging"
	@echo "make fuzz  - run each fuzz target (fuzz/) for FUZZ_SECONDS (default 60) seconds"

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
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p oxy
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

bench-quick:
	benches/run --quick

# Fuzzing with cargo-fuzz (libFuzzer) on the stable toolchain: `--sanitizer none` needs
# no nightly flag (AddressSanitizer would). Each target starts from its committed seeds
# (fuzz/seeds/TARGET) and keeps what it finds in fuzz/corpus/TARGET; a crash stops the
# run and leaves its input in fuzz/artifacts/TARGET. `make fuzz FUZZ_TARGETS=body_taps`
# runs one target.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= capsule_codec ip_capsules ip_packet tls_hello proxy_protocol_tcp \
	proxy_protocol_datagram uri_template settings_yaml http1_request_head body_taps
FUZZ_FLAGS ?= --sanitizer none

fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	$(CARGO) fuzz build $(FUZZ_FLAGS)
	@failed=""; for target in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$target; \
	  echo "== $$target ($(FUZZ_SECONDS) s)"; \
	  $(CARGO) fuzz run $(FUZZ_FLAGS) $$target fuzz/corpus/$$target fuzz/seeds/$$target -- \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
	    || failed="$$failed $$target"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz targets that failed:$$failed (inputs in fuzz/artifacts/)"; exit 1; fi
