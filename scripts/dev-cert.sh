#!/usr/bin/env bash
# Makes the self-signed localhost certificate config/default.yaml's HTTPS proxy uses,
# once: config/certs/localhost.crt and .key (kept out of git).
set -euo pipefail
dir="$(dirname "$0")/../config/certs"
# Kept unless it is an older one marked as a CA, which QUIC clients (rustls) refuse.
if [ -f "$dir/localhost.crt" ] && [ -f "$dir/localhost.key" ] &&
  ! openssl x509 -in "$dir/localhost.crt" -noout -ext basicConstraints 2>/dev/null | grep -q "CA:TRUE"; then
  exit 0
fi
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
  -keyout "$dir/localhost.key" -out "$dir/localhost.crt" -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
  -addext "basicConstraints=critical,CA:FALSE" -addext "keyUsage=digitalSignature" \
  -addext "extendedKeyUsage=serverAuth" 2>/dev/null
echo "made $dir/localhost.crt (self-signed; curl --proxy-cacert it)"
