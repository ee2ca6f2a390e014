# syntax=docker/dockerfile:1
# xds-server container image.
#
#   docker build -t xds-server:latest .
#
# deploy/kubernetes/deployment.yaml runs `xds-server:latest`; push the image to your registry and point
# the Deployment at it (see deploy/kubernetes/README.md). Configuration comes from XDS_* environment
# variables (deploy/kubernetes/configmap.yaml), or pass flags after the image name.

# --- build -------------------------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# The whole workspace (its members list each other: xds-server/core, xds-server/xdsctl, proto, e2e,
# tools/xds-load) and the patched envoy-types in vendor/. Cache mounts keep the registry and the target
# directory between builds, so editing the server's code does not rebuild kube, tonic and the rest.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p xds-server -p xdsctl --bin xds-server --bin xdsctl \
    && cp target/release/xds-server target/release/xdsctl /

# --- run ---------------------------------------------------------------------------------------------
# Distroless: glibc and libgcc (what a Rust binary links against), CA certificates, no shell, no
# package manager. The :nonroot tag runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /xds-server /usr/local/bin/xds-server
# `kubectl exec deploy/xds-server -- xdsctl status` (the admin API listens on 127.0.0.1:18001).
COPY --from=builder /xdsctl /usr/local/bin/xdsctl
USER 65532:65532
# ADS (gRPC), --xds-addr.
EXPOSE 18000
ENTRYPOINT ["/usr/local/bin/xds-server"]
