#!/usr/bin/env bash
# Installs what the ecosystem tests need on a fresh Debian machine:
#   tests/browser.rs  Debian's chromium + playwright-core (tests/browser, npm ci)
#   tests/sse_load_report.rs  the same (it opens an sse-load --report page)
#   tests/clients.rs  the eventsource npm package (tests/clients, npm ci) and httpx + httpx-sse
#   tests/nginx.rs    Debian's nginx
#   tests/http2.rs    nginx, openssl (a self-signed certificate), curl, chromium + playwright-core
#   tests/bus.rs, tests/cluster.rs  Debian's redis-server (each test starts its own on a unix socket)
#   tests/lockouts.rs `ss` from iproute2 (kernel send queues of non-reading clients)
#   .ci/package.sh    `systemd-analyze` from systemd (verifies the packaged units; not started)
# Run it before `SSE_REQUIRE_ECOSYSTEM=1 cargo test`, which then fails instead of skipping
# when anything is missing. Exits non-zero on any failure. Never downloads a browser build:
# the browser is Debian's /usr/bin/chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

echo "ecosystem: apt packages (chromium, nginx, openssl, curl, redis-server, iproute2, systemd)"
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium nginx openssl curl redis-server iproute2 systemd >/dev/null
test -x /usr/bin/chromium
# Debian starts nginx as a service on port 80 when it can; the tests run their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
  $sudo systemctl stop nginx || true
fi
# Likewise redis-server's service on port 6379: the tests never use it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet redis-server 2>/dev/null; then
  $sudo systemctl stop redis-server || true
fi

for cmd in node npm python3; do
  command -v "$cmd" >/dev/null || { echo "ecosystem: $cmd is missing" >&2; exit 1; }
done

echo "ecosystem: npm ci (tests/browser, tests/clients)"
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/clients && npm ci --no-audit --no-fund --loglevel=error)

echo "ecosystem: pip install (tests/clients/requirements.txt)"
if ! python3 -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt; then
  # A Debian system Python refuses pip installs without this flag (PEP 668).
  python3 -m pip install --quiet --disable-pip-version-check --break-system-packages \
    -r tests/clients/requirements.txt
fi

# Check that everything is usable, so a broken install fails here rather than in a test.
/usr/bin/chromium --version
{ command -v nginx >/dev/null && nginx -v; } || /usr/sbin/nginx -v
redis-server --version
echo "ecosystem: apt packages (chromium, nginx, openssl, curl, redis-server, iproute2, systemd)"
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
$sudo apt-get -o DPkg::Lock::Timeout=300 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq chromium nginx openssl curl redis-server iproute2 systemd >/dev/null
(cd tests/browser && node -e 'require("playwright-core"); console.log("playwright-core ok")')
(cd tests/clients && node --input-type=module -e 'import { EventSource } from "eventsource"; console.log("eventsource ok")')
python3 -c 'import httpx, httpx_sse; print("httpx", httpx.__version__, "httpx-sse ok")'
echo "ecosystem: ready"
