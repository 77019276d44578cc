#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: the first control plane of
# ${CLUSTER_NAME} (kubeadm). Written by nodeimg stamp, run once at first boot
# by nodeimg-bootstrap.service: kubeadm init with the pre-distributed CAs,
# Cilium in place of kube-proxy, the sops-age secret, and Flux when the
# cluster has a GitOps repository. Every step may be run again after a
# failure: a finished kubeadm init is not repeated, Helm and kubectl apply
# converge.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=bootstrap-lib.sh
. "${NODEIMG_ROOT:-}/usr/local/lib/nodeimg/bootstrap-lib.sh"

node='${NODE_HOSTNAME}'
address='${NODE_ADDRESS}'
user='${CLUSTER_USER}'
ca_hash='${CA_CERT_HASH}'
cilium_version='${CILIUM_VERSION}'
gitops_url='${GITOPS_URL}'
config=$ROOT/etc/nodeimg/kubeadm.yaml
admin=$ROOT/etc/kubernetes/admin.conf

main() {
	log "kubeadm init of $node"
	require kubeadm kubelet kubectl helm
	check_ca_material "$ca_hash"
	start_runtime
	wait_for "the address ${address:-of DHCP}" 60 5 has_address "$address"
	wait_for_clock

	if [ -e "$admin" ]; then
		log "kubeadm init already done ($admin exists)"
	else
		log "kubeadm init"
		kubeadm init --config "$config" --skip-token-print
	fi
	export KUBECONFIG=$admin
	wait_for "the API server" 60 5 api_ready
	user_kubeconfig "$user" "$admin"

	log "installing Cilium $cilium_version"
	retry 5 30 helm upgrade --install cilium cilium \
		--repo https://helm.cilium.io/ --version "$cilium_version" \
		--namespace kube-system --values "$ROOT/etc/nodeimg/cilium-values.yaml" ||
		fail "helm could not install Cilium $cilium_version"
	kubectl --namespace kube-system rollout status daemonset/cilium --timeout=15m
	kubectl wait --for=condition=Ready "node/$node" --timeout=10m

	sops_age_secret kubectl
	if [ -n "$gitops_url" ]; then
		flux
	else
		log "no GitOps repository: Flux not installed"
	fi
}

api_ready() {
	kubectl get --raw=/readyz >/dev/null 2>&1
}

flux() {
	log "installing the Flux operator"
	retry 5 30 helm upgrade --install flux-operator \
		oci://ghcr.io/controlplaneio-fluxcd/charts/flux-operator \
		--namespace flux-system --create-namespace --wait --timeout 10m ||
		fail "helm could not install the Flux operator"
	retry 30 10 kubectl apply --filename="$ROOT/etc/nodeimg/flux-instance.yaml" ||
		fail "the FluxInstance was not accepted"
	if kubectl --namespace flux-system wait fluxinstance/flux \
		--for=condition=Ready --timeout=10m; then
		log "Flux syncs $gitops_url"
	else
		log "warning: Flux is not ready yet; see kubectl -n flux-system get fluxinstance flux"
	fi
}

bootstrap main
