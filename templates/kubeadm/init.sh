#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: the first control plane of
# ${CLUSTER_NAME} (kubeadm). Written by nodeimg stamp, run at first boot by
# nodeimg-bootstrap.service until it succeeds: kubeadm init with the
# pre-distributed CAs, Cilium in place of kube-proxy, the age key secret,
# and Flux when the cluster has a GitOps repository. What is finished is
# read from the cluster (init_done), not from a file kubeadm writes early;
# an unfinished kubeadm init is reset and run again.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=bootstrap-lib.sh
. "${NODEIMG_ROOT:-}/usr/local/lib/nodeimg/bootstrap-lib.sh"

node='${NODE_HOSTNAME}'
address='${NODE_ADDRESS}'
user='${CLUSTER_USER}'
ca_hash='${CA_CERT_HASH}'
cilium_version='${CILIUM_VERSION}'
gateway_api_version='${GATEWAY_API_VERSION}'
gitops_url='${GITOPS_URL}'
sops_secret='${SOPS_SECRET}'
pull_secret='${GITOPS_PULL_SECRET}'
config=$ROOT/etc/nodeimg/kubeadm.yaml
admin=$ROOT/etc/kubernetes/admin.conf
token=

main() {
	step check "kubeadm init of $node"
	require kubeadm kubelet kubectl helm
	check_ca_material "$ca_hash"
	token=$(token_id "$config")
	[ -n "$token" ] || init_done ||
		fail "no bootstrap token in /etc/nodeimg/kubeadm.yaml and the cluster is not initialised"
	step runtime "starting the container runtime"
	start_runtime
	step network "waiting for the network"
	wait_for "the address ${address:-of DHCP}" has_address "$address"
	wait_for_clock

	kubeadm_run init init_done "$user" kubeadm init --config "$config" --skip-token-print
	export KUBECONFIG=$admin
	user_kubeconfig "$user" "$admin"

	# Cilium's Gateway API support needs the CRDs before it starts
	# (docs.cilium.io, Gateway API support: prerequisites).
	step gateway-api "installing the Gateway API CRDs $gateway_api_version"
	kubectl apply --server-side --force-conflicts \
		--filename="https://github.com/kubernetes-sigs/gateway-api/releases/download/$gateway_api_version/standard-install.yaml"

	step cni "installing Cilium $cilium_version"
	helm upgrade --install cilium cilium \
		--repo https://helm.cilium.io/ --version "$cilium_version" \
		--namespace kube-system --values "$ROOT/etc/nodeimg/cilium-values.yaml"
	kubectl --namespace kube-system rollout status daemonset/cilium --timeout=15m
	kubectl wait --for=condition=Ready "node/$node" --timeout=10m

	step secrets "storing the age key"
	sops_age_secret "$sops_secret" kubectl
	if [ -n "$pull_secret" ]; then
		step secrets "storing the GitOps deploy key"
		flux_git_secret "$pull_secret" kubectl
	fi
	if [ -n "$gitops_url" ]; then
		flux
	else
		log "no GitOps repository: Flux not installed"
	fi
	forget_join_secret "$config"
}

# init_done: kubeadm init went through every phase: the API server answers
# admin.conf, the cluster configuration is uploaded, this node is
# registered and marked as a control plane, the bootstrap token and
# kube-public/cluster-info (what joining nodes discover the cluster with)
# exist, the kubelet uses its rotated client certificate and CoreDNS is
# there.
init_done() {
	api_ready "$admin" &&
		kc "$admin" --namespace kube-system get configmap kubeadm-config &&
		node_registered "$admin" "$node" &&
		labelled "$admin" "$node" node-role.kubernetes.io/control-plane &&
		{ [ -z "$token" ] || kc "$admin" --namespace kube-system get secret "bootstrap-token-$token"; } &&
		kc "$admin" --namespace kube-public get configmap cluster-info &&
		grep -q kubelet-client-current.pem "$ROOT/etc/kubernetes/kubelet.conf" 2>/dev/null &&
		kc "$admin" --namespace kube-system get deployment coredns
}

flux() {
	step flux "installing the Flux operator"
	# No --wait: on a lone control plane the operator's pods may wait for
	# what Flux itself installs; readiness is checked below instead.
	helm upgrade --install flux-operator \
		oci://ghcr.io/controlplaneio-fluxcd/charts/flux-operator \
		--namespace flux-system --create-namespace
	wait_for "the FluxInstance resource type" \
		kubectl get crd fluxinstances.fluxcd.controlplane.io
	# Without a deploy key the rendered pullSecret is empty: leave the field
	# out rather than rely on how the operator reads an empty name.
	grep -v '^ *pullSecret: ""$' "$ROOT/etc/nodeimg/flux-instance.yaml" |
		kubectl apply --filename=-
	if kubectl --namespace flux-system wait fluxinstance/flux \
		--for=condition=Ready --timeout=10m; then
		log "Flux syncs $gitops_url"
	else
		log "warning: Flux is not ready yet; see kubectl -n flux-system get fluxinstance flux"
	fi
}

bootstrap main
