#!/usr/bin/env bash
# Creates the certificates and keys an Edgepin config directory refers to,
# for the nodes listed in its cluster.json:
#   pki/ca.crt, pki/ca.key            the cluster CA (signs everything below)
#   pki/nodes/<node>.pem              server certificate + key in one file
#                                     (SAN: localhost, node name, node
#                                     address, 127.0.0.1, ::1)
#   pki/peer/<node>.crt, .key         peer-link identity (CN = node name,
#                                     serverAuth + clientAuth)
#   keys/cluster.key                  32 random bytes, hex: the affinity
#                                     cookie's MAC key
# Keys are created with mode 0600. Idempotent: files that exist are kept
# (a node added to cluster.json gets its files on the next run); --force
# makes everything anew. Nothing here is committed (see .gitignore).
#
# In production, give each host only its own pki/nodes/<node>.pem and
# pki/peer/<node>.* besides pki/ca.crt and keys/cluster.key; keep
# pki/ca.key off the hosts (it can mint peer identities).
#
# Needs bash, the openssl command and python3 (only to read cluster.json).
set -euo pipefail

usage() {
  echo "usage: $0 [--force] [--days N] CONFDIR" >&2
  exit 64
}

force=0
days=825
confdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --force) force=1 ;;
    --days)
      [ $# -ge 2 ] || usage
      days="$2"
      shift
      ;;
    -h|--help) usage ;;
    -*) echo "make-pki: unknown option $1" >&2; usage ;;
    *)
      [ -z "$confdir" ] || usage
      confdir="$1"
      ;;
  esac
  shift
done
[ -n "$confdir" ] || usage
case "$days" in ''|*[!0-9]*) echo "make-pki: --days needs a number" >&2; exit 64 ;; esac

cluster="$confdir/cluster.json"
if [ ! -r "$cluster" ]; then
  echo "make-pki: cannot read $cluster" >&2
  exit 1
fi
python=/usr/bin/python3
[ -x "$python" ] || python=python3

# "name address" per node. Names are validated by the config loader; this
# only refuses what would break a file name or an openssl argument.
nodes=$("$python" - "$cluster" <<'PY'
import json, re, sys
with open(sys.argv[1]) as f:
    doc = json.load(f)
for n in doc.get("nodes", []):
    name, addr = str(n.get("name", "")), str(n.get("address", ""))
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", name) or not re.fullmatch(r"[0-9A-Fa-f.:]+", addr):
        sys.exit("make-pki: bad node entry: %r" % n)
    print(name, addr)
PY
)
if [ -z "$nodes" ]; then
  echo "make-pki: no nodes in $cluster" >&2
  exit 1
fi

pki="$confdir/pki"
keys="$confdir/keys"
mkdir -p "$pki/nodes" "$pki/peer" "$keys"
chmod 700 "$keys"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077  # every key is private from the moment it exists

created=0
say() { echo "make-pki: $*"; created=$((created + 1)); }

# A certificate is made anew if it is missing, with --force, or when the CA
# was just made (certificates of an old CA would no longer verify).
reissue=$force
wanted() { [ "$reissue" = 1 ] || [ ! -e "$1" ]; }

# Runs an openssl command quietly; on failure shows what it said and stops.
quiet() {
  if ! "$@" 2>"$tmp/stderr"; then
    echo "make-pki: failed: $*" >&2
    cat "$tmp/stderr" >&2
    exit 1
  fi
}

new_key() {  # new_key FILE
  quiet openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
  chmod 600 "$1"
}

# sign CSR_KEY SUBJECT EXTFILE OUT_CERT: a leaf signed by the cluster CA.
sign() {
  local key="$1" subject="$2" ext="$3" out="$4"
  quiet openssl req -new -key "$key" -subj "$subject" -out "$tmp/req.csr"
  quiet openssl x509 -req -in "$tmp/req.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 \
    -extfile "$ext" -out "$out"
  chmod 644 "$out"
}

if wanted "$pki/ca.crt" || wanted "$pki/ca.key"; then
  new_key "$pki/ca.key"
  quiet openssl req -x509 -new -key "$pki/ca.key" -subj "/CN=Edgepin cluster CA" -days 3650 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$pki/ca.crt"
  chmod 644 "$pki/ca.crt"
  say "created $pki/ca.crt and ca.key"
  reissue=1
fi

while read -r name addr; do
  server="$pki/nodes/$name.pem"
  if wanted "$server"; then
    cat > "$tmp/server.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:$name,IP:$addr,IP:127.0.0.1,IP:::1
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EOF
    new_key "$tmp/server.key"
    sign "$tmp/server.key" "/CN=$name" "$tmp/server.ext" "$tmp/server.crt"
    # HAProxy-style bundle: certificate then key, so the file is private.
    cat "$tmp/server.crt" "$tmp/server.key" > "$server"
    chmod 600 "$server"
    say "created $server"
  fi

  peer_crt="$pki/peer/$name.crt"
  peer_key="$pki/peer/$name.key"
  if wanted "$peer_crt" || wanted "$peer_key"; then
    cat > "$tmp/peer.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$name,IP:$addr
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid,issuer
EOF
    new_key "$peer_key"
    sign "$peer_key" "/CN=$name" "$tmp/peer.ext" "$peer_crt"
    say "created $peer_crt and $name.key"
  fi
done <<< "$nodes"

if [ "$force" = 1 ] || [ ! -e "$keys/cluster.key" ]; then
  openssl rand -hex 32 > "$keys/cluster.key"
  chmod 600 "$keys/cluster.key"
  say "created $keys/cluster.key"
fi

if [ "$created" = 0 ]; then
  echo "make-pki: everything already present in $confdir (use --force to remake)"
fi
