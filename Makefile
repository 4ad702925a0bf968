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
