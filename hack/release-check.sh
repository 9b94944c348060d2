#!/usr/bin/env bash
# Validates goreleaser.yaml with goreleaser from the tools module (never the
# product's go.mod). With --build it also builds every binary for every
# platform into dist/ (git-ignored) as a snapshot.
#
#   hack/release-check.sh           # goreleaser check
#   hack/release-check.sh --build   # check, then build --snapshot --clean
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT

go -C "$root/tools" build -o "$bin/goreleaser" github.com/goreleaser/goreleaser/v2
cd "$root"
"$bin/goreleaser" check -f goreleaser.yaml
if [ "${1:-}" = "--build" ]; then
  "$bin/goreleaser" build -f goreleaser.yaml --snapshot --clean --timeout 2h
fi
