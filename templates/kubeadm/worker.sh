#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: a worker of ${CLUSTER_NAME} (kubeadm).
# Written by nodeimg stamp, run once at first boot by
# nodeimg-bootstrap.service: kubeadm join with the cluster's join token (no
# expiry by default), the cluster CA pinned by the hash of its public key.
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
	kubeadm_join "$api_host" "$api_port" "$config"
}

bootstrap main
