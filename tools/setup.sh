#!/usr/bin/env bash
# lblab's install step (`make setup`): idempotent, and quick when nothing is missing.
#  1. Debian/Ubuntu packages (apt), only those missing; network steps retried.
#  2. .venv from the distribution's /usr/bin/python3 with --system-site-packages (so Debian's
#     mininet package imports), pinned requirements.txt; rebuilt only when requirements change.
#  3. The userspace link relay (build/lblab-relay) and GRE decapsulator (build/lblab-gredecap),
#     compiled like Mininet's mnexec.
#  4. Open vSwitch started if it is not running (userspace datapath + userspace TSO where the
#     kernel has no openvswitch module).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "lblab setup needs root (apt, Open vSwitch, network namespaces): run it with sudo" >&2
  exit 1
fi

PACKAGES=(mininet openvswitch-switch iperf3 iputils-ping ethtool bridge-utils iproute2 procps
          unbound dnsperf dnsutils nsd curl nftables tcpdump gcc libc6-dev make git
          python3 python3-venv python3-dev nginx-light libnginx-mod-http-lua wrk bird2)

retry() {  # retry a network step: registries hiccup, CI must not
  local n=1
  until "$@"; do
    if [ $n -ge 4 ]; then echo "failed after $n attempts: $*" >&2; return 1; fi
    echo "retrying in $((n * 5))s: $*" >&2; sleep $((n * 5)); n=$((n + 1))
  done
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  retry apt-get update -q
  # policy-rc.d keeps package scripts from starting system-wide DNS servers (unbound, nsd):
  # lblab starts its own, on its own addresses, and stops them.
  policy=/usr/sbin/policy-rc.d; created_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1; fi
  trap '[ $created_policy = 1 ] && rm -f "$policy"' EXIT
  retry apt-get install -y -q --no-install-recommends "${missing[@]}"
  # nginx installed by lblab is lblab's backend server, started per backend inside its own
  # namespace: not a system service listening on every interface at the next boot.
  if printf '%s\n' "${missing[@]}" | grep -qx nginx-light && command -v systemctl >/dev/null; then
    systemctl disable nginx.service >/dev/null 2>&1 || true
  fi
  # Likewise BIRD: lblab runs one per router and LB speaker of the LB tier (lab/bird.py).
  if printf '%s\n' "${missing[@]}" | grep -qx bird2 && command -v systemctl >/dev/null; then
    systemctl disable bird.service >/dev/null 2>&1 || true
  fi
else
  echo "packages: all present"
fi

VENV=.venv
REQ_HASH=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.lblab-requirements" 2>/dev/null)" != "$REQ_HASH" ]; then
  if ! "$VENV/bin/python" -c 'import sys; assert sys.base_prefix == "/usr"' 2>/dev/null; then
    echo "building $VENV from /usr/bin/python3 (with system site-packages for mininet)"
    rm -rf "$VENV"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
  else
    echo "updating $VENV to requirements.txt"
  fi
  retry "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "$REQ_HASH" > "$VENV/.lblab-requirements"
else
  echo "venv: up to date"
fi

mkdir -p build
if [ -f topologies/relay/lblab_relay.c ] && \
   { [ ! -x build/lblab-relay ] || [ topologies/relay/lblab_relay.c -nt build/lblab-relay ]; }; then
  echo "compiling build/lblab-relay"
  gcc -O2 -Wall -o build/lblab-relay topologies/relay/lblab_relay.c -lm
fi
if [ ! -x build/lblab-gredecap ] || [ topologies/lblab_gredecap.c -nt build/lblab-gredecap ]; then
  echo "compiling build/lblab-gredecap"
  gcc -O2 -Wall -o build/lblab-gredecap topologies/lblab_gredecap.c
fi

"$VENV/bin/python" -c 'from topologies.ovs import ensure_running; print("Open vSwitch:", ensure_running(), "datapath")'
