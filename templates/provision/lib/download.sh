# Shared by the recipes that install a release file checked against a
# SHA-256 (helm, k3s); nodeimg puts this text in front of theirs.

# need_curl: installs curl from the base's own apt sources when it is missing.
need_curl() {
	if ! command -v curl >/dev/null; then
		apt-get update
		apt-get install -y --no-install-recommends ca-certificates curl
	fi
}

# download_checked RECIPE URL FILE WANT [WHY]: downloads URL to FILE and
# refuses it (exit 1) unless its SHA-256 is WANT; WHY says what an empty
# WANT means. Prints the SHA-256 it checked.
download_checked() {
	echo "recipe $1: $2" >&2
	curl -fsSL -o "$3" "$2"
	got=$(sha256sum "$3" | cut -d' ' -f1)
	if [ -z "$4" ] || [ "$got" != "$4" ]; then
		echo "recipe $1: ${2##*/} has SHA-256 $got, expected ${4:-${5:-(nothing)}}: refused" >&2
		exit 1
	fi
	echo "$got"
}
