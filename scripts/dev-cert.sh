#!/usr/bin/env bash
# Makes the self-signed localhost certificate config/default.yaml's HTTPS proxy uses,
# once: config/certs/localhost.crt and .key (kept out of git).
set -euo pipefail
dir="$(dirname "$0")/../config/certs"
[ -f "$dir/localhost.crt" ] && [ -f "$dir/localhost.key" ] && exit 0
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
  -keyout "$dir/localhost.key" -out "$dir/localhost.crt" -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" 2>/dev/null
echo "made $dir/localhost.crt (self-signed; curl --proxy-cacert it)"
