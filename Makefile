# The mesh's entry points. `make test` is what CI runs; every target installs what it needs.

CARGO ?= cargo
CRD_DIR := charts/base/crds

.PHONY: help deps demo demo-up demo-down test e2e fmt-check clippy deny unit release crds descriptors validate fmt bench-pilot bench bench-deps

help:
	@echo "make demo        a local mesh with Bookinfo: routing, shifting, faults, mTLS, metrics; then removed (root)"
	@echo "make demo-up     the same mesh, left running to explore (meshctl local status); make demo-down removes it"
	@echo "make test        format check, clippy (warnings denied), cargo-deny and every test of the workspace"
	@echo "make e2e         the end-to-end suite alone: Bookinfo on a local mesh (root)"
	@echo "make validate CONFIG=<file|dir|->  check Istio YAML against the mesh's rules"
	@echo "make crds        regenerate $(CRD_DIR) from the mesh-api types"
	@echo "make descriptors regenerate api/src/envoy/descriptors.bin from the envoy-types crate"
	@echo "make fmt         format the code"
	@echo "make bench-pilot time for one endpoint change to reach 1000 proxies of 1000 services"
	@echo "make bench       mesh-proxy against Envoy, nginx and HAProxy (latency, throughput, CPU, memory; root)"

deps:
	@scripts/deps.sh

# The local mesh needs root (network namespaces, iptables); the demo binaries are built in
# release mode, as a person would run the mesh.
release: deps
	$(CARGO) build --release --locked --bins

demo: release
	target/release/demo run

demo-up: release
	target/release/demo up

demo-down:
	@if [ -x target/release/demo ]; then target/release/demo down; else echo "nothing built, so nothing to remove"; fi

test: deps fmt-check clippy deny unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Licences, duplicate and banned crates, sources (deny.toml). Advisories need the RustSec
# database, a download CI cannot make: run `cargo deny check advisories` where you can.
deny:
	$(CARGO) deny --locked check licenses bans sources

# The binaries first: the end-to-end suite starts them (meshctl has no test of its own that
# would make cargo build it).
unit:
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test --workspace --locked

e2e: deps
	$(CARGO) build --workspace --bins --locked
	$(CARGO) test -p e2e --locked --test local_mesh -- --nocapture

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
