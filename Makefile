# berth — build, test and run the local cluster. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

MODULE   := github.com/berth-io/berth
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# grpcnotrace drops golang.org/x/net/trace (and html/template) from gRPC: smaller, faster-starting binaries.
# Kubernetes reads its version from these; berth-controlplane links k8s.io/kubernetes $(KUBE_VERSION).
KUBE_VERSION := v1.37.2
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) -X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=37 -X k8s.io/component-base/version.gitTreeState=clean \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION) -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=37
LDFLAGS  := -s -w -X $(MODULE)/internal/version.Version=$(VERSION) $(KUBE_LDFLAGS)
BIN      := $(CURDIR)/bin
STATE    ?= $(CURDIR)/.berth
GO       ?= go
export PATH := /usr/local/go/bin:$(PATH)
# One set of build settings for build, test and go tool: the large Kubernetes
# packages are then compiled once into the Go cache and shared by all three.
export CGO_ENABLED := 0
export GOFLAGS := -trimpath -tags=grpcnotrace

# berth-cni lives a few milliseconds per pod and never collects garbage. The
# Green Tea collector (Go 1.26's default) writes mark bits into each small
# span's last page, which costs the plugin ~16 page faults per exec, a good
# part of its start-up on a VM (docs/benchmarks.md): it is built with the
# previous collector while Go still offers it. Long-lived daemons keep the
# default.
CNI_GOEXPERIMENT := nogreenteagc

# name:package of every binary that exists today.
BINARIES := berth:./cmd/berth berth-pause:./cmd/berth-pause berth-coredns:./cmd/berth-coredns berth-localcloud:./localcloud berth-ipamd:./ipamd berth-cni:./cni-plugin berth-bootstrap:./node-bootstrap berth-controlplane:./controlplane berth-csi-ebs:./csi-ebs berth-csi-efs:./csi-efs berth-netpol:./netpol

# Debian packages the build and the tests need.
APT_PACKAGES := build-essential clang llvm libbpf-dev protobuf-compiler libprotobuf-dev iproute2 nftables iptables containernetworking-plugins \
	containerd runc awscli e2fsprogs xfsprogs util-linux kmod curl ca-certificates

.PHONY: help deps build test bench up down proto bpf generate lint clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

deps: ## Install what is missing: Debian packages and the Go tools pinned in go.mod (idempotent)
	@scripts/deps.sh $(APT_PACKAGES)

build: ## Build every binary into bin/, version-stamped from git describe
	@mkdir -p $(BIN)
	@for b in $(BINARIES); do \
		name=$${b%%:*}; pkg=$${b#*:}; \
		exp=; if [ $$name = berth-cni ]; then exp="GOEXPERIMENT=$(CNI_GOEXPERIMENT)"; fi; \
		echo "go build $$name ($(VERSION)$${exp:+, $$exp})"; \
		env $$exp $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/$$name $$pkg || exit 1; \
	done
	@echo "go build kubectl ($(KUBE_VERSION), the go.mod tool line)"
	@$(GO) build -ldflags '-s -w $(KUBE_LDFLAGS)' -o $(BIN)/kubectl k8s.io/kubernetes/cmd/kubectl
	@echo "go build kubelet ($(KUBE_VERSION), the go.mod tool line; the node-bootstrap join test runs it)"
	@$(GO) build -ldflags '-s -w $(KUBE_LDFLAGS)' -o $(BIN)/kubelet k8s.io/kubernetes/cmd/kubelet
	@echo "go build kube-proxy ($(KUBE_VERSION), the go.mod tool line; berth up runs it on each node)"
	@$(GO) build -ldflags '-s -w $(KUBE_LDFLAGS)' -o $(BIN)/kube-proxy k8s.io/kubernetes/cmd/kube-proxy
	@echo "go build metrics-server (the go.mod tool line; berth up imports its image into each node)"
	@$(GO) build -ldflags '-s -w' -o $(BIN)/metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server

test: deps build ## Install, build and run every test (root and kernel tests included)
	CI=$${CI:-true} BERTH_BIN=$(BIN) $(GO) test -count=1 -timeout 45m -p 2 ./...

bench: build ## Run the benchmarks as root (results go in docs/benchmarks.md)
	BERTH_BIN=$(BIN) $(GO) test -run '^$$' -bench . -benchmem -count 3 ./... | tee $(CURDIR)/.bench.txt

up: deps build ## Start the local cluster in $(STATE) (today: localcloud)
	$(BIN)/berth up --state-dir $(STATE) --bin-dir $(BIN)

down: ## Stop the local cluster and clean up what it made
	@if [ -x $(BIN)/berth ]; then $(BIN)/berth down --state-dir $(STATE); else echo "nothing to stop"; fi

proto: ## Regenerate proto/rpc and proto/datapath from their .proto files with the pinned generators
	protoc -I proto \
		--plugin=protoc-gen-go=$$($(GO) tool -n protoc-gen-go) \
		--plugin=protoc-gen-go-grpc=$$($(GO) tool -n protoc-gen-go-grpc) \
		--go_out=. --go_opt=module=$(MODULE) \
		--go-grpc_out=. --go-grpc_opt=module=$(MODULE) \
		proto/rpc.proto proto/datapath.proto

bpf: ## Regenerate the netpol BPF objects from netpol/bpf (needs clang and llvm-strip; output committed)
	cd netpol/datapath && $(GO) generate ./...

generate: proto ## Rerun every code generator

lint: ## gofmt check and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^vendor/')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

clean: ## Remove build output and local state
	rm -rf $(BIN) .bench.txt
	@if [ -d $(STATE) ]; then echo "leaving $(STATE); run make down first, then rm -rf it"; fi
