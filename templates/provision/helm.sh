#!/bin/sh
# nodeimg provisioning recipe "helm": the Helm release of [versions] helm,
# from its release tarball, checked against a SHA-256, to
# /usr/local/bin/helm. Runs as root inside the base image's root.
#
# Follows helm.sh/docs/intro/install/ ("From the Binary Releases": download
# helm-v<version>-linux-<arch>.tar.gz from https://get.helm.sh, unpack, move
# linux-<arch>/helm into place) and the checksum helm's own get-helm-3 script
# checks (the .sha256 file published beside each tarball).
#
# Set by nodeimg before this text: HELM_VERSION, NODEIMG_HELM_URL (default
# https://get.helm.sh) and NODEIMG_HELM_SHA256 (empty: the published .sha256
# is used; 64 hex digits: that hash, a pin independent of the server).
# need_curl and download_checked: lib/download.sh, put in front by nodeimg.
set -eu
: "${HELM_VERSION:?}" "${NODEIMG_HELM_URL:?}"
NODEIMG_HELM_SHA256=${NODEIMG_HELM_SHA256:-}

need_curl
tarball="helm-v${HELM_VERSION#v}-linux-arm64.tar.gz"
url="$NODEIMG_HELM_URL/$tarball"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
want=$NODEIMG_HELM_SHA256
if [ -z "$want" ]; then
	want=$(curl -fsSL "$url.sha256" | cut -d' ' -f1)
fi
got=$(download_checked helm "$url" "$work/$tarball" "$want" "(an empty $tarball.sha256)")
tar -xzf "$work/$tarball" -C "$work" linux-arm64/helm
install -m 0755 "$work/linux-arm64/helm" /usr/local/bin/helm
echo "recipe helm: /usr/local/bin/helm ${HELM_VERSION} (sha256 $got)"
