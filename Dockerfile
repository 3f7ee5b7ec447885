# syntax=docker/dockerfile:1
#
# sessionkeeper container image: a static-ish Rust binary on distroless (no shell, no package
# manager), running as the non-root user 65532.
#
#   docker build -t sessionkeeper:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9090:9090 sessionkeeper:0.1.0            # embedded store
#   docker run --rm -p 50051:50051 -p 9090:9090 -e DATABASE_URL=postgres://... sessionkeeper:0.1.0
#   docker run --rm -e DATABASE_URL=postgres://... sessionkeeper:0.1.0 migrate
#
# The builder and the runtime are the same Debian release (bookworm = debian12), so the binary
# links against the glibc the runtime image ships. Checked by scripts/test-deploy.

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------- build stage
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build

# Only what `cargo build` reads (see .dockerignore). protoc comes from the vendored crate. The
# load generator is a member of the workspace: cargo reads its manifest, but it is not built here.
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY migrations ./migrations
COPY src ./src
COPY bench/loadgen ./bench/loadgen

# The cache mounts keep the crates.io registry and the target dir between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/build/target,sharing=locked \
    cargo build --release --locked --bin sessionkeeper \
    && install -D -m 0755 target/release/sessionkeeper /out/sessionkeeper \
    && install -d -m 0750 -o 65532 -g 65532 /out/data

# -------------------------------------------------------------- runtime stage
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

LABEL org.opencontainers.image.title="sessionkeeper" \
      org.opencontainers.image.description="gRPC service that owns the lifecycle of AI-agent SDK session ids" \
      org.opencontainers.image.licenses="Apache-2.0"

COPY --from=builder /out/sessionkeeper /usr/local/bin/sessionkeeper
# The embedded store's directory (used only without DATABASE_URL), writable by the runtime user.
# Mount a volume here to keep it; in Kubernetes the chart mounts an emptyDir or a PVC.
COPY --from=builder --chown=65532:65532 /out/data /var/lib/sessionkeeper

ENV SESSIONKEEPER_DATA_DIR=/var/lib/sessionkeeper
WORKDIR /var/lib/sessionkeeper
# distroless "nonroot": uid/gid 65532, the same ids the Helm chart's securityContext uses.
USER 65532:65532

# gRPC (health, reflection, sessionkeeper.v1.SessionService) and HTTP /livez /readyz /metrics.
EXPOSE 50051 9090

# No HEALTHCHECK: there is no shell or curl in the image; orchestrators probe gRPC health or
# /livez and /readyz on port 9090.
ENTRYPOINT ["/usr/local/bin/sessionkeeper"]
CMD ["serve"]
