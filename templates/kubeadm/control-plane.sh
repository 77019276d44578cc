#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: a further control plane of
# ${CLUSTER_NAME} (kubeadm). Written by nodeimg stamp, run once at first boot
# by nodeimg-bootstrap.service: kubeadm join --control-plane with the
# pre-distributed CAs (no certificate key, no upload window) and the
# cluster's join token (no expiry by default), so a node stamped months
# later still joins.
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
	kubeadm_join "$api_host" "$api_port" "$config"
	user_kubeconfig "$user" "$ROOT/etc/kubernetes/admin.conf"
}

bootstrap main
