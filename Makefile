# kubestrap — see README.md.
GO        ?= go
BIN       := bin/kubestrap
# Real validators the tests run the generated documents through. The Ignition
# one is built from its Go module and cached per version outside the repo;
# cloud-init comes from Debian (`apt-get install cloud-init`, see .ci/run).
IGNITION_VERSION  := v2.26.0
TOOLS_DIR         := $(HOME)/.cache/kubestrap/bin
IGNITION_VALIDATE := $(TOOLS_DIR)/ignition-validate-$(IGNITION_VERSION)

.PHONY: build test demo vet tools clean

build:
	$(GO) build -o $(BIN) ./cmd/kubestrap

# The example from fixtures/guide (the guide's three nodes), offline: no cluster needed.
demo:
	$(GO) run ./cmd/kubestrap generate --offline -f fixtures/guide/cluster.yaml --butane --force --out out/guide
	@echo; echo "documents written under out/guide/:"; find out/guide -type f | sort

test: tools
	KUBESTRAP_IGNITION_VALIDATE=$(IGNITION_VALIDATE) $(GO) test ./...

vet:
	$(GO) vet ./...

tools: $(IGNITION_VALIDATE)

$(IGNITION_VALIDATE):
	@mkdir -p $(TOOLS_DIR)
	GOBIN=$(TOOLS_DIR)/.build-$(IGNITION_VERSION) $(GO) install github.com/coreos/ignition/v2/validate@$(IGNITION_VERSION)
	mv $(TOOLS_DIR)/.build-$(IGNITION_VERSION)/validate $@
	rmdir $(TOOLS_DIR)/.build-$(IGNITION_VERSION)

clean:
	rm -rf bin out

# End-to-end: etcd, kube-apiserver, kube-controller-manager and two kubelets,
# built from their Go modules by e2e/tools/build.sh (cached per version in
# $(HOME)/.cache/kubestrap/bin; ~15 min cold, a no-op warm), and a test that
# makes the kubelets join from the documents kubestrap writes (e2e/README.md).
# Needs root, util-linux, iproute2, cloud-init, and libblkid-dev to build.
.PHONY: e2e e2e-tools
e2e-tools:
	e2e/tools/build.sh

e2e: e2e-tools
	cd e2e && $(GO) vet ./... && KUBESTRAP_E2E=1 $(GO) test -count=1 -v -timeout 30m ./...

# Benchmarks (not part of CI: minutes, and kubeadm/kubectl builds): prints
# every figure with its ratio and rewrites BENCHMARKS.md.
.PHONY: bench
bench:
	bench/run.sh
