#!/usr/bin/env bash
# Installs Debian's Chromium (/usr/bin/chromium) for the browser tests.
# Idempotent: does nothing when Chromium is already there. Quiet on success.
set -euo pipefail

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install-chromium: Chromium not found at $CHROMIUM and cannot install it:" >&2
  echo "install-chromium: not root and no passwordless sudo. Run as root: apt-get update && apt-get install -y chromium" >&2
  exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: Chromium not found at $CHROMIUM and apt-get is not available; install Chromium by hand (or set CHROMIUM_PATH)." >&2
  exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! { "${SUDO[@]}" apt-get update -qq && "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-chromium: failed to install the Debian 'chromium' package." >&2
  exit 1
fi

if [ ! -x "$CHROMIUM" ]; then
  echo "install-chromium: the 'chromium' package was installed but $CHROMIUM is still missing (set CHROMIUM_PATH?)." >&2
  exit 1
fi
