#!/usr/bin/env bash
# gen.sh regenerates the Go code for every .proto file under pkg/api.
#
#   pkg/api/hack/gen.sh          # regenerate in place
#   pkg/api/hack/gen.sh OUTDIR   # write the generated files under OUTDIR instead
#
# Needs protoc with the well-known types (Debian: protobuf-compiler and
# libprotobuf-dev); the Go plugins are built from the versions pinned in
# pkg/api/hack/go.mod.
set -euo pipefail

hack_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
api_dir="$(dirname "$hack_dir")"
out_dir="${1:-$api_dir}"

command -v protoc >/dev/null || { echo "gen.sh: protoc not found: install protobuf-compiler" >&2; exit 1; }
wkt_include=""
for d in /usr/include /usr/local/include; do
	if [[ -f "$d/google/protobuf/timestamp.proto" ]]; then wkt_include="$d"; break; fi
done
[[ -n "$wkt_include" ]] || { echo "gen.sh: google/protobuf/timestamp.proto not found: install libprotobuf-dev" >&2; exit 1; }

bin_dir="$(mktemp -d)"
trap 'rm -rf "$bin_dir"' EXIT
(
	cd "$hack_dir"
	GOWORK=off GOFLAGS=-mod=readonly go build -o "$bin_dir/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
	GOWORK=off GOFLAGS=-mod=readonly go build -o "$bin_dir/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
)

mkdir -p "$out_dir"
cd "$api_dir"
mapfile -t protos < <(find . -path ./hack -prune -o -name '*.proto' -print | sed 's|^\./||' | sort)
PATH="$bin_dir:$PATH" protoc \
	-I "$api_dir" -I "$wkt_include" \
	--go_out="$out_dir" --go_opt=paths=source_relative \
	--go-grpc_out="$out_dir" --go-grpc_opt=paths=source_relative \
	"${protos[@]}"
