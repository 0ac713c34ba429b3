#!/usr/bin/env bash
# Install what building and testing Fog needs on a fresh Debian/Ubuntu machine with rustup:
# the wasm32-wasip2 target for the guest apps, the system packages listed below, Node.js and npm
# (componentize-js builds the JavaScript apps) and componentize-py (builds the Python apps).
# Safe to run again: it only installs what is missing.
set -euo pipefail

# System packages Fog's build and tests use: pkg-config, libssl-dev and libsqlite3-dev for arti
# (the onion front), tor (the private Tor network of the onion tests and `fog testnet`), curl
# (a C tor client's requests in those tests), iproute2 and nftables (the network lab's
# namespaces, links, netem and NATs: tests/lab and scripts/lab.sh), etcd-server (the etcd members
# the control plane's store tests and `fog control --store etcd://` run against),
# protobuf-compiler (protoc, which the etcd-client crate's build needs) and chromium (the
# headless browser the dashboard test renders `/dashboard` in), python3-venv (the private
# environment componentize-py is installed into, below).
APT_PACKAGES=(pkg-config libssl-dev libsqlite3-dev tor curl iproute2 nftables etcd-server protobuf-compiler chromium python3-venv)
# Node.js and npm build the JavaScript examples and `fog new js` projects; Debian's are enough.
# Only installed when `npm` is missing, so a Node.js installed another way is kept.
command -v npm >/dev/null 2>&1 || APT_PACKAGES+=(nodejs npm)
# componentize-py, pinned like the `fog new python` template and the tests expect it.
COMPONENTIZE_PY_VERSION=0.25.1

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found. Install Rust with rustup (https://rustup.rs), then run this again." >&2
  exit 1
fi

if command -v rustup >/dev/null 2>&1; then
  if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "setup: adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
  fi
elif ! rustc --print target-list | grep -qx wasm32-wasip2; then
  echo "setup: the wasm32-wasip2 target is missing and rustup is not available to add it." >&2
  exit 1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
  else
    echo "setup: please install these packages with your system's package manager: ${missing[*]}" >&2
    exit 1
  fi
fi

# componentize-py goes into a virtual environment of its own (Debian's Python refuses system-wide
# pip installs), linked onto the PATH: /usr/local/bin as root (CI), ~/.local/bin otherwise.
if ! componentize-py --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
  if [ "$(id -u)" -eq 0 ]; then
    venv=/opt/componentize-py bin=/usr/local/bin
  else
    venv="$HOME/.local/share/componentize-py" bin="$HOME/.local/bin"
  fi
  echo "setup: installing componentize-py $COMPONENTIZE_PY_VERSION into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "componentize-py==$COMPONENTIZE_PY_VERSION"
  mkdir -p "$bin"
  ln -sf "$venv/bin/componentize-py" "$bin/componentize-py"
  if ! command -v componentize-py >/dev/null 2>&1; then
    echo "setup: add $bin to your PATH to use componentize-py" >&2
  fi
fi
