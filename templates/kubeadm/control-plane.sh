#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: a further control plane of
# ${CLUSTER_NAME} (kubeadm). Written by nodeimg stamp, run at first boot by
# nodeimg-bootstrap.service until it succeeds: kubeadm join --control-plane
# with the pre-distributed CAs (no certificate key, no upload window) and
# the cluster's join token. The join counts as done only when this node is
# registered, a control plane, and runs an etcd member; an unfinished join
# is reset and run again (a half-joined etcd member would cost quorum).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=bootstrap-lib.sh
. "${NODEIMG_ROOT:-}/usr/local/lib/nodeimg/bootstrap-lib.sh"

node='${NODE_HOSTNAME}'
user='${CLUSTER_USER}'
ca_hash='${CA_CERT_HASH}'
api_host='${API_HOST}'
api_port='${API_PORT}'
config=$ROOT/etc/nodeimg/kubeadm.yaml
admin=$ROOT/etc/kubernetes/admin.conf

main() {
	step check "kubeadm join of $node as a control plane"
	require kubeadm kubelet kubectl
	check_ca_material "$ca_hash"
	[ -s "$config" ] || join_done ||
		fail "/etc/nodeimg/kubeadm.yaml is missing and $node has not joined: stamp the card again"
	step runtime "starting the container runtime"
	start_runtime
	step join "waiting for the API server"
	wait_for_endpoint "$api_host" "$api_port"
	wait_for_clock
	kubeadm_run join join_done "$user" kubeadm join --config "$config"
	user_kubeconfig "$user" "$admin"
	forget_join_secret "$config"
}

# join_done: the kubelet has its credentials, this node is registered and
# marked as a control plane (kubeadm's last join step), its etcd static pod
# is written and its etcd mirror pod is known to the API server.
join_done() {
	[ -s "$ROOT/etc/kubernetes/kubelet.conf" ] &&
		[ -s "$ROOT/etc/kubernetes/manifests/etcd.yaml" ] &&
		api_ready "$admin" &&
		node_registered "$admin" "$node" &&
		kc "$admin" --namespace kube-system get pod "etcd-$node" &&
		labelled "$admin" "$node" node-role.kubernetes.io/control-plane
}

bootstrap main
