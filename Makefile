# The mesh's entry points. `make test` is what CI runs; every target installs what it needs.

CARGO ?= cargo
CRD_DIR := charts/base/crds

.PHONY: help deps demo demo-up demo-down test e2e fmt-check clippy deny shellcheck unit release crds descriptors validate fmt bench-pilot bench bench-deps images kind-e2e

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
	@echo "make shellcheck  shellcheck every shell script of the repository"
	@echo "make images      the container images, $(HUB)/<binary>:$(TAG) (HUB, TAG, BASE_IMAGE, IMAGES); Docker engine"
	@echo "make kind-e2e    a kind cluster: images loaded, meshctl install, Bookinfo, the routing checks (Docker, kind, kubectl)"
	@echo "                 (images and kind-e2e cannot run where there is no Docker engine, as on the dev machines and CI)"

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

test: deps fmt-check clippy deny shellcheck unit

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Licences, duplicate and banned crates, sources (deny.toml). Advisories need the RustSec
# database, a download CI cannot make: run `cargo deny check advisories` where you can.
deny:
	$(CARGO) deny --locked check licenses bans sources

# Every shell script: the *.sh files (scripts/, e2e/kind/, ...) and CI's entry point. shellcheck
# comes from scripts/deps.sh (apt).
SHELL_SCRIPTS = $(shell find . -name '*.sh' -not -path './target/*' -not -path './.git/*' -not -path './.local/*' | sort) .ci/run
shellcheck:
	@command -v shellcheck >/dev/null 2>&1 || { echo "shellcheck is not installed: make deps (or apt-get install shellcheck)" >&2; exit 1; }
	shellcheck $(SHELL_SCRIPTS)

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
	$(CARGO) run -q -p meshctl -- validate -f $(CONFIG)

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

# The container images: one target per binary of docker/Dockerfile, built by one shared builder
# stage (docker/README.md). Needs a Docker engine with BuildKit; the project's development
# machines and CI have none, so this is for machines that do.
DOCKER ?= docker
HUB ?= ghcr.io/mesh
TAG ?= latest
IMAGES ?= mesh-proxy mesh-pilot mesh-ca mesh-init mesh-agent meshctl bookinfo
images:
	@command -v $(DOCKER) >/dev/null 2>&1 || { echo "make images: $(DOCKER) is not installed; building the images needs a Docker engine" >&2; exit 1; }
	@$(DOCKER) info >/dev/null 2>&1 || { echo "make images: no Docker engine answers ($(DOCKER) info failed); building the images needs one" >&2; exit 1; }
	@set -e; for image in $(IMAGES); do \
	  echo "images: $(HUB)/$$image:$(TAG)"; \
	  DOCKER_BUILDKIT=1 $(DOCKER) build -f docker/Dockerfile --target $$image -t $(HUB)/$$image:$(TAG) \
	    $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
	    $(if $(INIT_BASE_IMAGE),--build-arg INIT_BASE_IMAGE=$(INIT_BASE_IMAGE)) .; \
	done

# The mesh on a kind cluster, checked with the local suite's routing scenarios (e2e/kind/README.md).
# Needs Docker, kind and kubectl; it cannot run on machines without a Docker engine.
kind-e2e:
	e2e/kind/run.sh
