#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: a worker of ${CLUSTER_NAME} (kubeadm).
# Written by nodeimg stamp, run at first boot by nodeimg-bootstrap.service
# until it succeeds: kubeadm join with the cluster's join token, the
# cluster CA pinned by the hash of its public key. The join counts as done
# when the kubelet's credentials reach the API server and this node is
# registered; an unfinished join is reset and run again.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=bootstrap-lib.sh
. "${NODEIMG_ROOT:-}/usr/local/lib/nodeimg/bootstrap-lib.sh"

node='${NODE_HOSTNAME}'
api_host='${API_HOST}'
api_port='${API_PORT}'
config=$ROOT/etc/nodeimg/kubeadm.yaml
kubelet_conf=$ROOT/etc/kubernetes/kubelet.conf

main() {
	step check "kubeadm join of $node as a worker"
	require kubeadm kubelet kubectl
	[ -s "$config" ] || join_done ||
		fail "/etc/nodeimg/kubeadm.yaml is missing and $node has not joined: stamp the card again"
	step runtime "starting the container runtime"
	start_runtime
	step join "waiting for the API server"
	wait_for_endpoint "$api_host" "$api_port"
	wait_for_clock
	kubeadm_run join join_done "" kubeadm join --config "$config"
	forget_join_secret "$config"
}

# join_done: the kubelet's kubeconfig works and this node is registered
# (the node authorizer lets a kubelet read its own Node).
join_done() {
	node_registered "$kubelet_conf" "$node"
}

bootstrap main
