#!/usr/bin/env bash
# Development certificates for the compose clusters, under deploy/compose/tls: a CA, one
# certificate per node (node-<id>.pem/.key, naming the node id as sus://node/<id>, its service
# name and its address on the compose network) and the operator's client certificate
# (client.pem/.key, naming no node) for the `init` service. Uses the image's own `sus certs init`,
# so no Rust toolchain is needed. Production clusters should use certificates from their own CA
# with the same names (docs/security.md, "PKI: who is a node").
#
#   deploy/compose/certs.sh [NODES]      # NODES: 3 (default) or 5
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
n="${1:-3}"
nodes=()
for i in $(seq 1 "$n"); do nodes+=(--node "$i=n$i,172.29.7.$((10 + i))"); done
if [ -e "$here/tls/ca.pem" ]; then
  echo "$here/tls already holds certificates; remove it to make new ones" >&2
  exit 0
fi
mkdir -p "$here/tls"
docker run --rm --entrypoint /usr/local/bin/sus -v "$here/tls:/tls" "${SUS_IMAGE:-sus-node:latest}" \
  certs init --dir /tls "${nodes[@]}"
# The nodes read their key as root inside the container; keep it unreadable to others here.
chmod 600 "$here/tls/"*.key
echo "certificates in $here/tls"
