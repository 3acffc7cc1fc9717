#!/bin/sh
# Make sure the tools the platform and browser tests drive are installed: promtool (Debian `prometheus`), nginx and
# chromium (the console's browser tests drive Debian's chromium through Playwright; never a browser download).
# Idempotent and quiet: installs only what is missing, runs `apt-get update` at most once, and on failure prints one
# line naming the package and exits 1.
set -u

missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
    echo "ensure_tools: missing${missing}; install them as root (apt-get install${missing})" >&2
    exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! $sudo apt-get update -qq >"$log" 2>&1; then
    echo "ensure_tools: apt-get update failed: $(tail -n 1 "$log")" >&2
    exit 1
fi
# shellcheck disable=SC2086 # one word per package
if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >"$log" 2>&1; then
    echo "ensure_tools: apt-get install${missing} failed: $(tail -n 1 "$log")" >&2
    exit 1
fi
