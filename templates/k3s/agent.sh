#!/bin/bash
# Role bootstrap of ${NODE_HOSTNAME}: a k3s agent of ${CLUSTER_NAME}. Written
# by nodeimg stamp, run once at first boot by nodeimg-bootstrap.service:
# checks the k3s binary and the token file, waits for the server
# (${K3S_URL}), then enables and starts k3s-agent.service (flags in
# /etc/rancher/k3s/config.yaml).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=bootstrap-lib.sh
. "${NODEIMG_ROOT:-}/usr/local/lib/nodeimg/bootstrap-lib.sh"

node='${NODE_HOSTNAME}'
url='${K3S_URL}'

main() {
	log "k3s agent on $node, joining $url"
	require_k3s
	require_token_files
	wait_for_url "$url"
	wait_for_clock

	systemctl enable --now k3s-agent.service
	wait_for "k3s-agent.service to run" 30 10 systemctl is-active --quiet k3s-agent.service
}

bootstrap main
