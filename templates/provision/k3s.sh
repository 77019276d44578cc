#!/bin/sh
# nodeimg provisioning recipe "k3s": the k3s binary of [versions] k3s for
# arm64, checked against a SHA-256 and installed to /usr/local/bin/k3s at
# base time, so a node never downloads anything at first boot (air-gap
# friendly). Runs as root inside the base image's root.
#
# Follows docs.k3s.io/installation/airgap ("Install K3s": the k3s binary of
# the release placed at /usr/local/bin/k3s and made executable) and what
# k3s's install.sh does when it downloads: the release asset k3s-arm64 and
# sha256sum-arm64.txt from github.com/k3s-io/k3s/releases/download/<tag>/,
# the binary's line of that file compared with the download, and kubectl,
# crictl and ctr linked to k3s when they are not there. nodeimg's bootstrap
# writes the k3s units itself, so install.sh is not run.
#
# Set by nodeimg before this text: K3S_VERSION (a release tag such as
# v1.34.1+k3s1), NODEIMG_K3S_URL (default
# https://github.com/k3s-io/k3s/releases/download) and NODEIMG_K3S_SHA256
# (empty: the release's sha256sum-arm64.txt is used; 64 hex digits: that
# hash). need_curl and download_checked: lib/download.sh, put in front by
# nodeimg.
set -eu
: "${K3S_VERSION:?}" "${NODEIMG_K3S_URL:?}"
NODEIMG_K3S_SHA256=${NODEIMG_K3S_SHA256:-}

need_curl
base="$NODEIMG_K3S_URL/$K3S_VERSION"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
want=$NODEIMG_K3S_SHA256
if [ -z "$want" ]; then
	want=$(curl -fsSL "$base/sha256sum-arm64.txt" | awk '$2 == "k3s-arm64" { print $1 }')
fi
got=$(download_checked k3s "$base/k3s-arm64" "$work/k3s" "$want" "(no line for k3s-arm64 in sha256sum-arm64.txt)")
install -m 0755 "$work/k3s" /usr/local/bin/k3s
for cmd in kubectl crictl ctr; do
	if ! command -v "$cmd" >/dev/null; then
		ln -s k3s "/usr/local/bin/$cmd"
	fi
done
echo "recipe k3s: /usr/local/bin/k3s ${K3S_VERSION} (sha256 $got)"
