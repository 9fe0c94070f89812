#!/usr/bin/env bash
# The Debian package: builds it with cargo-deb, installs it, and checks what operators rely on:
# the files and where they go, /etc/sse-server/env as a conffile, the installed binaries run
# and serve a stream, the installed units pass `systemd-analyze verify`; then purges it.
# Exit 0 only when every check passed. Without dpkg it skips, unless SSE_REQUIRE_ECOSYSTEM=1.
set -euo pipefail
cd "$(dirname "$0")/.."
. .ci/lib.sh

say() { printf 'package: %s\n' "$*"; }
fail() { printf 'package: FAILED: %s\n' "$*" >&2; exit 1; }

if ! command -v dpkg >/dev/null || ! command -v dpkg-deb >/dev/null; then
    if [ "${SSE_REQUIRE_ECOSYSTEM:-}" = 1 ]; then
        fail "dpkg is missing, but SSE_REQUIRE_ECOSYSTEM=1 requires the package check"
    fi
    say "SKIPPED: dpkg is missing (not a Debian system)"
    exit 0
fi
[ "$(id -u)" = 0 ] || fail "installing the package needs root"

if ! cargo deb --version >/dev/null 2>&1; then
    say "installing cargo-deb"
    cargo install cargo-deb --locked --quiet
fi

# --fast: lighter compression; --no-dbgsym --strip: the same stripped binaries, without building
# the separate debug-symbol package CI does not install.
say "cargo deb"
deb=$(cargo deb --fast --no-dbgsym --strip --quiet | tail -n 1)
[ -f "$deb" ] || fail "cargo deb named no package file (got: '$deb')"
say "built $deb ($(du -h "$deb" | cut -f1))"

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    rm -rf "$work"
    dpkg --purge sse-server >/dev/null 2>&1 || true
}
trap cleanup EXIT

say "dpkg -i"
dpkg -i "$deb" >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg -i $deb"; }

unitdir=/usr/lib/systemd/system
say "dpkg -L lists the binaries, the units and the env template"
listed=$(dpkg -L sse-server)
for path in /usr/bin/sse-server /usr/bin/sse-load "$unitdir/sse-server.service" \
    "$unitdir/sse-server@.service" /etc/sse-server/env; do
    grep -qxF "$path" <<<"$listed" || fail "dpkg -L sse-server does not list $path"
    [ -e "$path" ] || fail "$path is listed but not installed"
done

say "/etc/sse-server/env is a conffile, mode 600, and sets nothing"
grep -qxF /etc/sse-server/env /var/lib/dpkg/info/sse-server.conffiles ||
    fail "/var/lib/dpkg/info/sse-server.conffiles does not list /etc/sse-server/env"
dpkg-query -W -f='${Conffiles}\n' sse-server | grep -q '^ /etc/sse-server/env ' ||
    fail "dpkg-query shows no conffile /etc/sse-server/env"
[ "$(stat -c %a /etc/sse-server/env)" = 600 ] || fail "/etc/sse-server/env is not mode 600"
if grep -vE '^[[:space:]]*(#|$)' /etc/sse-server/env; then
    fail "/etc/sse-server/env has active lines (above): the template must only comment"
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
for bin in sse-server sse-load; do
    got=$("/usr/bin/$bin" --version)
    say "/usr/bin/$bin --version: $got"
    [ "$got" = "$bin $version" ] || fail "/usr/bin/$bin --version: expected '$bin $version'"
done

say "the installed server delivers a tick"
out="$work/server.out"
env -i PATH=/usr/bin:/bin /usr/bin/sse-server --listen 127.0.0.1:0 --interval 200ms >"$out" 2>"$work/server.err" &
server=$!
addr=$(listening_addr "$out")
[ -n "$addr" ] || { cat "$work/server.err" >&2; fail "the installed server did not start"; }
stream=$(curl -sN --max-time 2 "http://$addr/events" || true)
grep -q '^data: ' <<<"$stream" || fail "no event from http://$addr/events in 2 s (got: '$stream')"
say "got: $(grep -m1 '^data: ' <<<"$stream")"
kill "$server"
wait "$server" 2>/dev/null || true
server=""

# `systemd-analyze verify` exits 0 on a misspelled key or a bad value (it warns and ignores
# them), so any output at all counts as a failure. A minimal good unit must verify silently
# first: where it does not (systemd cannot run its checks here), the check is skipped. A copy
# with a misspelled key must be caught, or the check itself is broken.
verify() { # verify UNIT_PATH: prints what systemd-analyze said; fails when it said anything
    local said
    said=$(cd / && systemd-analyze verify "$1" 2>&1) || { printf '%s\n' "$said"; return 1; }
    [ -z "$said" ] || { printf '%s\n' "$said"; return 1; }
}
printf '[Service]\nExecStart=/bin/true\n' >"$work/probe.service"
if ! command -v systemd-analyze >/dev/null; then
    if [ "${SSE_REQUIRE_ECOSYSTEM:-}" = 1 ]; then
        fail "systemd-analyze is missing (.ci/ecosystem.sh installs systemd)"
    fi
    say "SKIPPED systemd-analyze verify: systemd-analyze is missing"
elif ! probe=$(verify "$work/probe.service"); then
    say "SKIPPED systemd-analyze verify: it cannot run here (a minimal unit fails: $probe)"
else
    for unit in "$unitdir/sse-server.service" "$unitdir/sse-server@1.service"; do
        say "systemd-analyze verify $unit"
        verify "$unit" >"$work/verify.out" || { cat "$work/verify.out" >&2; fail "systemd-analyze verify $unit"; }
    done
    sed 's/^DynamicUser=/DynamicUsr=/' "$unitdir/sse-server@.service" >"$work/broken@.service"
    if verify "$work/broken@1.service" >/dev/null; then
        fail "systemd-analyze verify passed a unit with a misspelled key: the check cannot fail"
    fi
    say "systemd-analyze verify rejects a copy with a misspelled key"
fi

say "dpkg --purge"
dpkg --purge sse-server >"$work/dpkg.log" 2>&1 || { cat "$work/dpkg.log" >&2; fail "dpkg --purge sse-server"; }
for path in /usr/bin/sse-server /usr/bin/sse-load "$unitdir/sse-server.service" /etc/sse-server/env; do
    [ ! -e "$path" ] || fail "$path is still there after the purge"
done
say "OK"
