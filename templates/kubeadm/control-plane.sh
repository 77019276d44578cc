#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: a further control plane of
# ${CLUSTER_NAME} (kubeadm). Written by nodeimg stamp, run once at first boot
# by nodeimg-bootstrap.service: kubeadm join --control-plane with the
# pre-distributed CAs (no certificate key, no upload window) and a join
# token that does not expire, so a node stamped months later still joins.
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

main() {
	log "kubeadm join of $node as a control plane"
	require kubeadm kubelet kubectl
	check_ca_material "$ca_hash"
	start_runtime
	wait_for_endpoint "$api_host" "$api_port"
	wait_for_clock

	if [ -e "$ROOT/etc/kubernetes/kubelet.conf" ]; then
		log "kubeadm join already done (/etc/kubernetes/kubelet.conf exists)"
	else
		log "kubeadm join"
		kubeadm join --config "$config"
	fi
	user_kubeconfig "$user" "$ROOT/etc/kubernetes/admin.conf"
}

bootstrap main
