#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: a worker of ${CLUSTER_NAME} (kubeadm).
# Written by nodeimg stamp, run once at first boot by
# nodeimg-bootstrap.service: kubeadm join with a token that does not expire,
# the cluster CA pinned by its public key hash.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=bootstrap-lib.sh
. "${NODEIMG_ROOT:-}/usr/local/lib/nodeimg/bootstrap-lib.sh"

node='${NODE_HOSTNAME}'
api_host='${API_HOST}'
api_port='${API_PORT}'
config=$ROOT/etc/nodeimg/kubeadm.yaml

main() {
	log "kubeadm join of $node as a worker"
	require kubeadm kubelet
	start_runtime
	wait_for_endpoint "$api_host" "$api_port"
	wait_for_clock

	if [ -e "$ROOT/etc/kubernetes/kubelet.conf" ]; then
		log "kubeadm join already done (/etc/kubernetes/kubelet.conf exists)"
	else
		log "kubeadm join"
		kubeadm join --config "$config"
	fi
}

bootstrap main
