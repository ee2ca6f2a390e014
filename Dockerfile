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

# Dependencies first, in their own layer: copy only the manifests and the lock file, with empty
# stand-ins for the workspace's sources, and build. This layer is reused until a Cargo.toml or
# Cargo.lock changes, so editing the server's code does not rebuild kube, tonic and the rest.
COPY Cargo.toml Cargo.lock ./
COPY proto/Cargo.toml proto/
COPY xds-server/Cargo.toml xds-server/
COPY xds-server/xdsctl/Cargo.toml xds-server/xdsctl/
COPY e2e/Cargo.toml e2e/
# proto/build.rs is a stand-in too, so the build dependencies (tonic-prost-build, protoc) are cached.
RUN mkdir -p proto/src xds-server/src xds-server/xdsctl/src e2e/src/bin \
    && echo 'fn main() {}' > proto/build.rs \
    && echo 'fn main() {}' > xds-server/src/main.rs \
    && echo 'fn main() {}' > xds-server/xdsctl/src/main.rs \
    && touch proto/src/lib.rs xds-server/src/lib.rs e2e/src/lib.rs \
    && echo 'fn main() {}' > e2e/src/bin/failover-demo.rs \
    && cargo build --release --locked -p xds-server --bin xds-server \
    && rm -rf proto/src proto/build.rs xds-server/src xds-server/xdsctl/src e2e/src

# Then the real sources. Only xds-server and its admin CLI, xdsctl (xds-server/xdsctl), are built; e2e
# is copied because the workspace lists it. proto/ is the admin API crate (xds-admin-api), compiled by
# its build script.
COPY proto proto
COPY xds-server xds-server
COPY e2e e2e
# Make sure cargo sees the real sources as newer than the stand-ins it built above.
RUN touch proto/build.rs proto/src/lib.rs xds-server/src/lib.rs xds-server/src/main.rs \
        xds-server/xdsctl/src/main.rs \
    && cargo build --release --locked -p xds-server -p xdsctl --bin xds-server --bin xdsctl \
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
