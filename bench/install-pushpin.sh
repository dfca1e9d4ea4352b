#!/usr/bin/env bash
# Installs Pushpin (Debian's package) for the benchmark's peer comparison. Idempotent.
# The Debian package starts nothing by itself here (no systemd); the benchmark runs its own
# instance with a generated configuration under a temporary directory.
set -euo pipefail
if command -v pushpin >/dev/null 2>&1; then
  echo "pushpin already installed: $(pushpin --version 2>/dev/null | head -1)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends pushpin
# Do not keep a system-wide instance running if the package's init script started one.
if command -v service >/dev/null 2>&1; then $SUDO service pushpin stop >/dev/null 2>&1 || true; fi
echo "pushpin installed: $(pushpin --version 2>/dev/null | head -1)"
