#!/usr/bin/env bash
# Makes, once, the development certificates the shipped configs use (kept out of git):
# config/certs/localhost.crt and .key, the self-signed certificate of
# config/default.yaml's HTTPS proxy, and config/certs/interception-ca.crt and .key, the
# CA config/http-firewall.yaml mints its TLS interception certificates from.
set -euo pipefail
dir="$(dirname "$0")/../config/certs"
mkdir -p "$dir"

# A self-signed leaf (CA:FALSE, for QUIC clients, which refuse a CA as a server
# certificate) without a key usage list (BoringSSL clients need it to sign itself).
# Older files made differently are replaced.
crt="$dir/localhost.crt"
if ! { [ -f "$crt" ] && [ -f "$dir/localhost.key" ] &&
  openssl x509 -in "$crt" -noout -ext basicConstraints 2>/dev/null | grep -q "CA:FALSE" &&
  ! openssl x509 -in "$crt" -noout -ext keyUsage 2>/dev/null | grep -q "Usage"; }; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -keyout "$dir/localhost.key" -out "$crt" -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1" \
    -addext "basicConstraints=critical,CA:FALSE" 2>/dev/null
  echo "made $crt (self-signed; curl --proxy-cacert it)"
fi

# The interception CA: clients of the intercepting firewall must trust it.
ca="$dir/interception-ca.crt"
if [ ! -f "$ca" ] || [ ! -f "$dir/interception-ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
    -keyout "$dir/interception-ca.key" -out "$ca" -subj "/CN=Oxy interception CA (dev)" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  echo "made $ca (clients of the intercepting firewall trust it)"
fi
