#!/usr/bin/env bash
# Installs the Debian packages the deployment tests (test/deploy-*.test.ts) run for real:
#
#   bash scripts/install-deploy-tools.sh supervisor nginx caddy openssl docker-compose
#
#   supervisor -> supervisord, supervisorctl   (package supervisor)
#   nginx      -> nginx                        (package nginx-light)
#   caddy      -> caddy                        (package caddy)
#   openssl    -> openssl                      (package openssl; test certificates)
#   docker-compose -> docker-compose           (package docker-compose: `config` validates a
#                                               compose file without an engine; brings python3-yaml)
#
# Idempotent and quiet on success: a tool already on the PATH is left alone, and apt-get is only
# asked for what is missing (`apt-get update` only if the first try fails). Safe to run from
# several test files at once (serialised with flock). Services the packages would start are not
# wanted: on Debian images /usr/sbin/policy-rc.d usually forbids it; the tests run their own
# instances with their own configuration either way.
set -euo pipefail

declare -A PACKAGE=([supervisor]=supervisor [nginx]=nginx-light [caddy]=caddy [openssl]=openssl [docker-compose]=docker-compose)
declare -A BINARY=([supervisor]=supervisord [nginx]=nginx [caddy]=caddy [openssl]=openssl [docker-compose]=docker-compose)

PATH="$PATH:/usr/sbin:/sbin"
missing=()
for tool in "$@"; do
  if [ -z "${PACKAGE[$tool]:-}" ]; then
    echo "install-deploy-tools: unknown tool '$tool' (known: ${!PACKAGE[*]})" >&2
    exit 2
  fi
  command -v "${BINARY[$tool]}" >/dev/null 2>&1 || missing+=("${PACKAGE[$tool]}")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install-deploy-tools: missing ${missing[*]} and cannot install: not root and no passwordless sudo." >&2
  echo "install-deploy-tools: run as root: apt-get update && apt-get install -y ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deploy-tools: missing ${missing[*]} and apt-get is not available; install them by hand." >&2
  exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
install() {
  "${SUDO[@]}" apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}"
}
(
  # One installer at a time, also across test files started in parallel.
  flock -w 600 9 || { echo "install-deploy-tools: timed out waiting for another install" >&2; exit 1; }
  install >"$log" 2>&1 || { "${SUDO[@]}" apt-get update -qq && install; } >>"$log" 2>&1
) 9>"${TMPDIR:-/tmp}/quicksilver-install-deploy-tools.lock" || {
  cat "$log" >&2
  echo "install-deploy-tools: failed to install ${missing[*]}." >&2
  exit 1
}

for tool in "$@"; do
  if ! command -v "${BINARY[$tool]}" >/dev/null 2>&1; then
    echo "install-deploy-tools: ${PACKAGE[$tool]} was installed but ${BINARY[$tool]} is still missing." >&2
    exit 1
  fi
done
