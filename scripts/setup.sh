#!/usr/bin/env bash
# Installs everything tcpclone needs on a fresh Debian machine (run as root): the libpcap headers
# the `pcap` crate builds against, and the lab's real servers, clients and test oracles.
set -euo pipefail
PKGS=(libpcap-dev pkg-config iproute2 iputils-ping procps tcpdump ethtool tshark tcpreplay nftables
      nginx-light libnginx-mod-http-echo chromium redis-server redis-tools wrk curl hyperfine time bc python3 libcap2-bin util-linux
      openssl prometheus man-db systemd adduser dpkg-dev binutils
      nats-server)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The packaged services must not run on the host: the lab starts its own copies in namespaces.
for svc in nginx redis-server prometheus prometheus-node-exporter nats-server; do
  systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
command -v cargo >/dev/null || { echo "setup: cargo not found (install Rust with rustup)"; exit 1; }
# The Debian package (scripts/package.sh, lab/tests/package_deb.rs) is built with cargo-deb.
if ! cargo deb --version >/dev/null 2>&1; then
  echo "setup: installing cargo-deb"
  cargo install cargo-deb --locked --quiet
fi
echo "setup: ok"
