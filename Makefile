# kubestrap — see README.md.
GO        ?= go
BIN       := bin/kubestrap
# Real validators the tests run the generated documents through. The Ignition
# one is built from its Go module and cached per version outside the repo;
# cloud-init comes from Debian (`apt-get install cloud-init`, see .ci/run).
IGNITION_VERSION  := v2.26.0
TOOLS_DIR         := $(HOME)/.cache/kubestrap/bin
IGNITION_VALIDATE := $(TOOLS_DIR)/ignition-validate-$(IGNITION_VERSION)

.PHONY: build test demo vet tools clean fuzz

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

# Fuzz each input loader, and each encoder fast path against the library
# whose bytes it mimics, for $(FUZZTIME), one target at a time (go test takes
# one -fuzz target per run). Targets are package-dir:FuzzName. A finding is
# written to <package-dir>/testdata/fuzz/<target>/ and fails the run. Go
# 1.26's fuzz coordinator can also fail a run at the -fuzztime deadline with
# a bare "context deadline exceeded" and nothing found (golang/go#75804,
# fixed in Go 1.27): only that exact failure is tolerated.
FUZZTIME     ?= 10s
FUZZ_TARGETS := generator/model:FuzzClusterFile generator/model:FuzzEnvFile \
	generator/model:FuzzNodesCSV generator/model:FuzzNodesYAML \
	generator/encode/ignition:FuzzTemplateMatchesButane \
	generator/encode/ignition:FuzzMakeDataURL \
	generator/encode/cloudinit:FuzzUserDataFastMatchesYAML \
	generator/encode/cloudinit:FuzzMetaDataFastMatchesYAML \
	generator/encode/cloudinit:FuzzMergeUserData \
	generator/encode/ignition:FuzzSnippet \
	generator/encode/internal/layout:FuzzLiteral \
	serve:FuzzBootProfile approve:FuzzDecide
fuzz:
	@set -e; log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	for target in $(FUZZ_TARGETS); do \
		pkg=$${target%%:*}; t=$${target##*:}; \
		echo "== $$t ($(FUZZTIME))"; \
		if $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./$$pkg/ >"$$log" 2>&1; then \
			grep -E '^fuzz: elapsed' "$$log" | tail -1; continue; \
		fi; \
		if grep -q 'Failing input written to' "$$log" || ! grep -q '^    context deadline exceeded$$' "$$log" || \
			[ "$$(grep -c -- '^--- FAIL' "$$log")" != 1 ]; then cat "$$log"; exit 1; fi; \
		echo "$$t: the coordinator's deadline race (golang/go#75804), nothing found; not counted"; \
	done

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
