#!/usr/bin/env bash
# Installs Nchan (Debian's nginx + libnginx-mod-nchan) for the benchmark's peer comparison.
# Idempotent. The benchmark never uses the system nginx configuration or service: it runs its own
# nginx in the foreground (daemon off) with a generated configuration, prefix and temp dirs under
# a temporary directory, on a free port.
set -euo pipefail
mod_present() {
  ls /usr/lib/nginx/modules/ngx_nchan_module.so >/dev/null 2>&1 \
    || ls /usr/share/nginx/modules/ngx_nchan_module.so >/dev/null 2>&1
}
if command -v nginx >/dev/null 2>&1 && mod_present; then
  echo "nchan already installed: $(dpkg-query -W -f='${Package} ${Version}' libnginx-mod-nchan 2>/dev/null || echo module present), $(nginx -v 2>&1)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d: do not let the package's postinst start a system-wide nginx on port 80.
POLICY=/usr/sbin/policy-rc.d
CREATED_POLICY=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
  $SUDO chmod +x "$POLICY"
  CREATED_POLICY=1
fi
trap '[ "$CREATED_POLICY" = 1 ] && $SUDO rm -f "$POLICY"' EXIT
$SUDO apt-get install -y -qq --no-install-recommends nginx libnginx-mod-nchan
if command -v service >/dev/null 2>&1; then $SUDO service nginx stop >/dev/null 2>&1 || true; fi
echo "nchan installed: $(dpkg-query -W -f='${Package} ${Version}' libnginx-mod-nchan), $(nginx -v 2>&1)"
