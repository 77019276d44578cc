#!/bin/sh
# nodeimg provisioning recipe "kubeadm": kubeadm, kubelet and kubectl from the
# Kubernetes package repository and CRI-O from its repository beside it, each
# pinned to [versions] of the cluster file and held, plus what kubelet needs
# from the kernel. Runs as root inside the base image's root (`nodeimg base`).
#
# Follows the upstream install documents:
# - kubernetes.io/docs/setup/production-environment/tools/kubeadm/install-kubeadm/
#   ("Debian-based distributions"): one repository per minor release,
#   https://pkgs.k8s.io/core:/stable:/v<minor>/deb/ (a flat repository, suite
#   "/"), its key Release.key dearmored into /etc/apt/keyrings and named by
#   signed-by, then apt-mark hold kubelet kubeadm kubectl;
# - kubernetes.io/docs/setup/production-environment/container-runtimes/:
#   overlay and br_netfilter loaded at boot, bridge traffic through iptables,
#   IPv4 forwarding, swap off (kubelet refuses to start with swap by default);
# - CRI-O's packaging README (github.com/cri-o/packaging): the same layout at
#   https://pkgs.k8s.io/addons:/cri-o:/stable:/v<minor>/deb/, package cri-o,
#   unit crio.service.
#
# Set by nodeimg before this text: KUBERNETES_VERSION and CRIO_VERSION (a
# minor such as 1.34 installs the newest patch of that minor; a patch such as
# 1.34.2 pins it), NODEIMG_K8S_PKGS (the repository host, default
# https://pkgs.k8s.io; the environment variable of the same name overrides it
# for a mirror).
set -eu
: "${KUBERNETES_VERSION:?}" "${CRIO_VERSION:?}" "${NODEIMG_K8S_PKGS:?}"

say() { echo "recipe kubeadm: $*"; }

# 1.34.2 -> 1.34; v1.34 -> 1.34
minor_of() { echo "${1#v}" | cut -d. -f1,2; }
# An apt version pattern for a patch release, nothing for a minor.
pin_of() {
	v=${1#v}
	case $v in
	*.*.*) echo "=$v-*" ;;
	*) echo "" ;;
	esac
}

k8s_minor=$(minor_of "$KUBERNETES_VERSION")
crio_minor=$(minor_of "$CRIO_VERSION")
k8s_pin=$(pin_of "$KUBERNETES_VERSION")
crio_pin=$(pin_of "$CRIO_VERSION")
k8s_repo="$NODEIMG_K8S_PKGS/core:/stable:/v$k8s_minor/deb/"
crio_repo="$NODEIMG_K8S_PKGS/addons:/cri-o:/stable:/v$crio_minor/deb/"

# Tools to fetch and import the keys (apt-transport-https of the upstream
# page is an empty transitional package on Debian 12 and later).
missing=""
for p in ca-certificates curl gpg; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	say "installing$missing"
	apt-get update
	# shellcheck disable=SC2086 # one word per package
	apt-get install -y --no-install-recommends $missing
fi

say "repositories $k8s_repo and $crio_repo"
install -d -m 0755 /etc/apt/keyrings
curl -fsSL "${k8s_repo}Release.key" | gpg --batch --yes --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
curl -fsSL "${crio_repo}Release.key" | gpg --batch --yes --dearmor -o /etc/apt/keyrings/cri-o-apt-keyring.gpg
chmod 0644 /etc/apt/keyrings/kubernetes-apt-keyring.gpg /etc/apt/keyrings/cri-o-apt-keyring.gpg
echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] $k8s_repo /" >/etc/apt/sources.list.d/kubernetes.list
echo "deb [signed-by=/etc/apt/keyrings/cri-o-apt-keyring.gpg] $crio_repo /" >/etc/apt/sources.list.d/cri-o.list

apt-get update
# Held packages may be installed at another version only when asked to.
apt-mark unhold kubelet kubeadm kubectl cri-o >/dev/null 2>&1 || true
say "installing kubelet kubeadm kubectl ${KUBERNETES_VERSION}, cri-o ${CRIO_VERSION}"
apt-get install -y --no-install-recommends --allow-downgrades \
	"kubelet$k8s_pin" "kubeadm$k8s_pin" "kubectl$k8s_pin" "cri-o$crio_pin"
apt-mark hold kubelet kubeadm kubectl cri-o

# What was installed must be what was asked for.
for p in kubelet kubeadm kubectl cri-o; do
	want=$KUBERNETES_VERSION
	[ "$p" = cri-o ] && want=$CRIO_VERSION
	got=$(dpkg-query -W -f='${Version}' "$p")
	case $got in
	"${want#v}"*) say "$p $got (held)" ;;
	*)
		echo "recipe kubeadm: $p $got installed, but $want was asked for" >&2
		exit 1
		;;
	esac
done

# Kernel modules and sysctls of the container-runtimes page.
printf 'overlay\nbr_netfilter\n' >/etc/modules-load.d/k8s.conf
cat >/etc/sysctl.d/k8s.conf <<'SYSCTL'
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward = 1
SYSCTL

# Swap off: fstab entries commented out, the swap services of Raspberry Pi
# OS (dphys-swapfile up to Bookworm, rpi-swap's zram on Trixie) and
# zram-tools masked where they exist ([base] disable_swap does the same
# without root).
if [ -f /etc/fstab ]; then
	sed -i -E 's/^([^#[:space:]][^[:space:]]*[[:space:]]+[^[:space:]]+[[:space:]]+swap([[:space:]]|$))/#\1/' /etc/fstab
fi
for u in dphys-swapfile.service rpi-swap.service rpi-zram-writeback.service rpi-zram-writeback.timer zramswap.service; do
	if [ -e "/usr/lib/systemd/system/$u" ] || [ -e "/lib/systemd/system/$u" ]; then
		systemctl mask "$u"
	fi
done

# The runtime and kubelet start at boot; a preset line keeps them enabled
# when a first boot (machine-id "uninitialized") applies presets.
systemctl enable crio.service kubelet.service
install -d -m 0755 /etc/systemd/system-preset
printf 'enable crio.service\nenable kubelet.service\n' >/etc/systemd/system-preset/20-nodeimg-kubeadm.preset
say "done"
