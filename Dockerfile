# syntax=docker/dockerfile:1
# The kubestrap image deploy/serve runs: one static binary on distroless.
#   docker build -t ghcr.io/kubestrap/kubestrap:dev .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ... .

# The builder runs on the build host's platform and cross-compiles: no
# emulation, and CGO is off, so the binary needs no libc.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
# Modules first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -o /kubestrap ./cmd/kubestrap

# static-debian12: CA certificates, /etc/passwd, tzdata, no shell. :nonroot
# runs as uid 65532, which deploy/serve/deployment.yaml names.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /kubestrap /kubestrap
USER 65532:65532
ENTRYPOINT ["/kubestrap"]
