# The mesh's entry points. `make test` is what CI runs; every target installs what it needs.

CARGO ?= cargo
CRD_DIR := charts/base/crds

.PHONY: help deps test fmt-check clippy deny unit crds descriptors validate fmt bench-pilot bench bench-deps

help:
	@echo "make test        format check, clippy (warnings denied), cargo-deny and every test of the workspace"
	@echo "make validate CONFIG=<file|dir|->  check Istio YAML against the mesh's rules"
	@echo "make crds        regenerate $(CRD_DIR) from the mesh-api types"
	@echo "make descriptors regenerate api/src/envoy/descriptors.bin from the envoy-types crate"
	@echo "make fmt         format the code"
	@echo "make bench-pilot time for one endpoint change to reach 1000 proxies of 1000 services"
	@echo "make bench       mesh-proxy against Envoy, nginx and HAProxy (latency, throughput, CPU, memory; root)"

deps:
	@scripts/deps.sh

test: deps fmt-check clippy deny unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Licences, duplicate and banned crates, sources (deny.toml). Advisories need the RustSec
# database, a download CI cannot make: run `cargo deny check advisories` where you can.
deny:
	$(CARGO) deny --locked check licenses bans sources

unit:
	$(CARGO) test --workspace --locked

fmt:
	$(CARGO) fmt --all

crds:
	$(CARGO) run -q -p mesh-api --example write_crds -- $(CRD_DIR)

descriptors:
	$(CARGO) run -q -p mesh-api --example write_envoy_descriptors

CONFIG ?= -
validate: deps
	$(CARGO) run -q -p mesh-api --example validate -- $(CONFIG)

CLIENTS ?= 1000
SERVICES ?= 1000
bench-pilot: deps
	$(CARGO) build --release -p mesh-pilot -p e2e
	target/release/pilot-load --clients $(CLIENTS) --services $(SERVICES)

# The data-plane benchmark's peers and load generator (not needed by the tests).
bench-deps: deps
	@command -v nginx >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx
	@command -v haproxy >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy
	@command -v oha >/dev/null || $(CARGO) install oha --locked

bench: bench-deps
	$(CARGO) build --release -p mesh-proxy -p e2e --bin mesh-proxy --bin proxy-bench
	target/release/proxy-bench
