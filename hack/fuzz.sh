#!/usr/bin/env bash
# Runs every fuzz target of every Go module in the repository for $FUZZTIME
# each (default 1m). Targets are discovered, not listed: every package whose
# tests define a func Fuzz... is asked for its targets with
# `go test -list`, so a new target runs without editing this script.
# A failing input is written by `go test` to the package's
# testdata/fuzz/<Target>/ (commit it: it then runs with every `go test`).
#
#   FUZZTIME=20s hack/fuzz.sh          # what CI runs
#   hack/fuzz.sh ./pkg/proxy/...       # only these packages (of the main module)
#   hack/fuzz.sh --list                # print the targets, fuzz nothing
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-1m}
go=${GO:-go}
list=false
if [ "${1:-}" = --list ]; then
  list=true
  shift
fi

# Packages: directories with a _test.go file that defines a fuzz target.
if [ $# -gt 0 ]; then
  mapfile -t dirs < <($go list -f '{{.Dir}}' "$@")
else
  mapfile -t dirs < <(git ls-files --cached --others --exclude-standard -- '*_test.go' |
    xargs -r grep -l '^func Fuzz[A-Z0-9_]' | xargs -r -n1 dirname | sort -u)
fi

targets=() # "dir target" pairs
for dir in "${dirs[@]}"; do
  # -list prints the matching names, then "ok <pkg> <time>".
  out=$(cd "$dir" && $go test -list '^Fuzz' .) || { echo "listing the fuzz targets of $dir failed:" >&2; echo "$out" >&2; exit 1; }
  while read -r name; do
    case $name in Fuzz*) targets+=("$dir $name") ;; esac
  done <<<"$out"
done
if [ ${#targets[@]} -eq 0 ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

if $list; then
  printf '%s\n' "${targets[@]}"
  exit 0
fi
echo "fuzzing ${#targets[@]} targets for $fuzztime each"
failed=()
flaked=()
start=$SECONDS
for t in "${targets[@]}"; do
  read -r dir name <<<"$t"
  rel=${dir#"$PWD"/}
  echo "--- $rel $name"
  t0=$SECONDS
  log=$(mktemp)
  if ! (cd "$dir" && $go test -run '^$' -fuzz "^$name\$" -fuzztime "$fuzztime" .) 2>&1 | tee "$log"; then
    # Go 1.26's fuzz coordinator can fail a target with a bare "context
    # deadline exceeded" as -fuzztime ends, when a worker is still busy
    # (go.dev/issue/75804, fixed in Go 1.27): no input failed then, and none
    # was written. Anything else, or any written input, is a failure.
    if grep -q 'Failing input written to' "$log" || ! grep -qx '    context deadline exceeded' "$log"; then
      failed+=("$rel $name")
    else
      echo "    (Go's fuzz-deadline race, go.dev/issue/75804: no failing input; not a failure)"
      flaked+=("$rel $name")
    fi
  fi
  rm -f "$log"
  echo "    ($((SECONDS - t0)) s)"
done
echo "fuzzed ${#targets[@]} targets in $((SECONDS - start)) s${flaked[*]:+ (stopped by the Go fuzz deadline race, no failing input: ${flaked[*]})}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED: ${failed[*]}" >&2
  # New crashers are untracked files under testdata/fuzz: name them.
  git ls-files --others --exclude-standard -- '*/testdata/fuzz/*' | sed 's/^/new failing input (commit it with the fix): /' >&2
  exit 1
fi
