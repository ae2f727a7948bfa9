#!/usr/bin/env bash
# Installs what berth's build and tests need and is not yet on this machine.
# Idempotent: a second run changes nothing and takes a second.
set -euo pipefail

missing=()
for p in "$@"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
	echo "deps: Debian packages present"
fi

# Go modules and the tools pinned by go.mod `tool` lines (built into the Go cache).
go mod download
go tool -n protoc-gen-go >/dev/null
go tool -n protoc-gen-go-grpc >/dev/null
go tool -n cnitool >/dev/null
go tool -n csi-sanity >/dev/null
echo "deps: Go tools ready"
