#!/usr/bin/env bash
# Debian packages the test suite uses: a real Slurm (with accounting), munge, MariaDB,
# Debian's chromium for the Explorer tests, wrk for the proxy benchmark, openssl for TLS tests,
# redis-server for several bridges sharing state.
# Installs only what is missing; does nothing (but say so) when not root.
set -euo pipefail
packages=(slurm-wlm slurmctld slurmd slurm-client slurmdbd munge mariadb-server chromium wrk openssl redis-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: not root; please install: ${missing[*]}" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
