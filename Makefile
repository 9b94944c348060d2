# Conduit's build and test entry points. `make test` is what CI runs.
GO ?= go
K8S_CACHE ?= $(HOME)/.cache/conduit-k8s
export CONDUIT_K8S_CACHE := $(K8S_CACHE)

.PHONY: build test unit fuzz e2e k8s-binaries demo clean generate gateway-api-crds release-check release-snapshot bench images chart

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Once: a recursive variable would run git describe at every use, and a
# commit made during a build would give the binaries and images two versions.
VERSION := $(VERSION)
LDFLAGS := -s -w -X github.com/conduitmesh/conduit/pkg/version.Version=$(VERSION)

# Static, trimmed and stripped, as goreleaser ships them: conduit-proxy's RSS
# figures (bench/RESULTS.md) assume this build.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/ ./cmd/...

# OCI image archives of conduit-proxy and conduit-controller in dist/images/,
# built offline from the release build for this machine's architecture and
# laid out as goreleaser's ko ships them (hack/mkimage), named and tagged as
# the chart and the injector expect for $(VERSION). Load one with
#   ctr -n k8s.io images import dist/images/conduit-proxy.tar
IMAGE_ARCH ?= $(shell $(GO) env GOARCH)
images:
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o dist/bin/linux_$(IMAGE_ARCH)/ ./cmd/conduit-proxy ./cmd/conduit-controller
	$(GO) run ./hack/mkimage -version "$(VERSION)" -out dist/images dist/bin/linux_$(IMAGE_ARCH)/conduit-proxy dist/bin/linux_$(IMAGE_ARCH)/conduit-controller

# The control plane chart as the release publishes it, stamped with
# $(VERSION) (SemVer, e.g. a tag v0.3.0): bin/chart/conduit-control-plane-<version>.tgz.
chart:
	$(GO) run ./hack/mkchart -version "$(VERSION)" -out bin/chart

# The Kubernetes binaries (kube-apiserver, kube-controller-manager, etcd, kwok,
# and the real node's kubelet, kube-proxy, kube-scheduler and CoreDNS) are
# built from Go modules once and cached outside the checkout, by version.
k8s-binaries:
	K8S_CACHE_DIR=$(K8S_CACHE) bash integration/hack/k8s-test-cluster.sh build >/dev/null

# Everything: unit tests, the interception test (root), integration tests
# against a real API server, then the real node's end-to-end test on its own
# (verbose: the log shows each step with its timing).
test: k8s-binaries
	$(GO) vet ./...
	$(GO) test -timeout 45m $$($(GO) list ./... | grep -v /integration/realnode)
	$(MAKE) --no-print-directory e2e
	cd bench && $(GO) vet ./... && $(GO) test ./...

# The end-to-end test on a real kubelet node (root, and the Debian packages
# .ci/run installs), with kube-proxy in its iptables mode, then in its
# nftables mode; part of `make test` too.
e2e: k8s-binaries
	$(GO) test -v -count=1 -timeout 40m -run TestConduitOnARealNode ./integration/realnode/
	CONDUIT_E2E_KUBE_PROXY_MODE=nftables $(GO) test -v -count=1 -timeout 40m -run TestConduitOnARealNode ./integration/realnode/

# Unit tests only (no Kubernetes binaries needed).
unit:
	$(GO) test -short ./...

# Every fuzz target in the repository (found with `go test -list`), each for
# FUZZTIME; CI runs FUZZTIME=20s. A failing input lands in the package's
# testdata/fuzz/: commit it with the fix.
FUZZTIME ?= 1m
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) bash hack/fuzz.sh

demo: build
	./bin/conduit demo

clean:
	rm -rf bin dist

# Regenerate the committed protobuf code (needs protoc: apt-get install protobuf-compiler libprotobuf-dev).
generate:
	bash pkg/api/hack/gen.sh

# Copy the Gateway API standard install of the sigs.k8s.io/gateway-api
# version in go.mod into manifests/gatewayapi/ (after `go get` of another
# version; a test fails until it is done).
gateway-api-crds:
	$(GO) run ./hack/mkgatewaycrds

# goreleaser check (goreleaser runs from tools/, never from the product's go.mod).
release-check:
	bash hack/release-check.sh

# Build every release binary for every platform into dist/ (slow).
release-snapshot:
	bash hack/release-check.sh --build

# The data plane benchmark; writes bench/RESULTS.md (see bench/README.md).
bench:
	cd bench && $(GO) run ./cmd/bench -quick
