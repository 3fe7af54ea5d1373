#!/usr/bin/env bash
# Installs, on Debian, what `make run` and `make test` need and the machine lacks.
set -euo pipefail

missing=()
command -v cc >/dev/null || missing+=(build-essential)
command -v cmake >/dev/null || missing+=(cmake)
command -v clang >/dev/null || missing+=(clang)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v git >/dev/null || missing+=(git)
command -v curl >/dev/null || missing+=(curl)
command -v ip >/dev/null || missing+=(iproute2)
command -v ping >/dev/null || missing+=(iputils-ping)
command -v openssl >/dev/null || missing+=(openssl)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v python3 >/dev/null || missing+=(python3)
# The HTTP/3 interop test runs an aioquic client from a virtual environment.
python3 -c "import ensurepip, venv" >/dev/null 2>&1 || missing+=(python3-venv)

if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust 1.88 or newer (rustup), then run make again" >&2
  exit 1
fi
