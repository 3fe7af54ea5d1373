#!/usr/bin/env bash
# Makes the self-signed localhost certificate config/default.yaml's HTTPS proxy uses,
# once: config/certs/localhost.crt and .key (kept out of git).
set -euo pipefail
dir="$(dirname "$0")/../config/certs"
# A self-signed leaf (CA:FALSE, for QUIC clients, which refuse a CA as a server
# certificate) without a key usage list (BoringSSL clients need it to sign itself).
# Older files made differently are replaced.
crt="$dir/localhost.crt"
if [ -f "$crt" ] && [ -f "$dir/localhost.key" ] &&
  openssl x509 -in "$crt" -noout -ext basicConstraints 2>/dev/null | grep -q "CA:FALSE" &&
  ! openssl x509 -in "$crt" -noout -ext keyUsage 2>/dev/null | grep -q "Usage"; then
  exit 0
fi
mkdir -p "$dir"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
  -keyout "$dir/localhost.key" -out "$dir/localhost.crt" -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
  -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null
echo "made $dir/localhost.crt (self-signed; curl --proxy-cacert it)"
