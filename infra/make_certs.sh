#!/usr/bin/env bash
# Certificates for the brokers' SASL_SSL listener: a private CA, one broker key pair signed by it, a PKCS12
# keystore for the brokers and a PKCS12 truststore for Java clients. Python clients (librdkafka) need only ca.pem.
#
#   infra/make_certs.sh OUT_DIR [HOSTNAME_OR_IP ...]      (default names: localhost 127.0.0.1)
#
# Why a private CA rather than a self-signed broker certificate: clients trust the CA once, and brokers can be
# re-keyed or added without touching any client. In production use your organisation's CA instead and keep
# only the keystore step. Re-running is a no-op while OUT_DIR/broker.p12 exists (pass --force to replace).
set -euo pipefail

force=0
if [[ "${1:-}" == "--force" ]]; then force=1; shift; fi
if [[ $# -lt 1 ]]; then
  echo "usage: $0 [--force] OUT_DIR [HOSTNAME_OR_IP ...]" >&2
  exit 2
fi
out="$1"; shift
names=("$@")
[[ ${#names[@]} -eq 0 ]] && names=(localhost 127.0.0.1)

for tool in openssl keytool; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is not on PATH (install OpenSSL and a JDK 17+)" >&2; exit 3; }
done

if [[ -f "$out/broker.p12" && $force -eq 0 ]]; then
  echo "certificates already in $out (use --force to replace them)"
  exit 0
fi

umask 077  # every key, store and password file private from the start; ca.pem is handed out by copying it
mkdir -p "$out"
chmod 700 "$out"
scratch="$(mktemp -d "$out/.partial.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"

san=""
for n in "${names[@]}"; do
  if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
san="${san%,}"

# the password goes to the tools in a file, never as an argument: any local user can read a command line (ps)
openssl rand -hex 24 > keystore.password

openssl req -x509 -newkey rsa:3072 -sha256 -days 3650 -nodes -keyout ca.key -out ca.pem \
  -subj "/CN=alertdist local CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey rsa:3072 -sha256 -nodes -keyout broker.key -out broker.csr \
  -subj "/CN=${names[0]}" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$san" > broker.ext
openssl x509 -req -in broker.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 -sha256 \
  -extfile broker.ext -out broker.pem 2>/dev/null
openssl verify -CAfile ca.pem broker.pem >/dev/null

openssl pkcs12 -export -name broker -in broker.pem -inkey broker.key -certfile ca.pem \
  -passout file:keystore.password -out broker.p12
keytool -importcert -noprompt -alias alertdist-ca -file ca.pem -storetype PKCS12 \
  -keystore truststore.p12 -storepass:file keystore.password >/dev/null 2>&1
keytool -list -storetype PKCS12 -keystore broker.p12 -storepass:file keystore.password >/dev/null

rm -f broker.csr broker.ext ca.srl
chmod 600 ./*  # ca.pem too: public, but under the home everything is private (clients get a copy)
# move into place only when everything above succeeded; broker.p12 last, as it marks "done"
for f in ca.key ca.pem broker.key broker.pem truststore.p12 keystore.password broker.p12; do
  mv -f "$f" "$out/$f"
done
echo "certificates written to $out (CA: $out/ca.pem; subject names: ${names[*]})"
