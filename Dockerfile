# syntax=docker/dockerfile:1
#
# sessionkeeper container image: a static-ish Rust binary on distroless (no shell, no package
# manager), running as the non-root user 65532.
#
#   scripts/build-image          # docker build -t sessionkeeper:VERSION --build-arg VERSION=… REVISION=… CREATED=… SOURCE=… .
#   docker run --rm -p 50051:50051 -p 9090:9090 sessionkeeper:VERSION            # embedded store
#   docker run --rm -p 50051:50051 -p 9090:9090 -e DATABASE_URL=postgres://... sessionkeeper:VERSION
#   docker run --rm -e DATABASE_URL=postgres://... sessionkeeper:VERSION migrate
#
# One version number: Cargo.toml's package version (printed by scripts/version). The OCI labels
# version, revision, created, source come from the build args VERSION, REVISION, CREATED, SOURCE
# (scripts/build-image passes all four); VERSION's default below is Cargo.toml's version, and a VERSION that is not the
# built binary's own version fails the build. scripts/test-deploy checks both (deploycheck/version_check.py).
#
# The builder and the runtime are the same Debian release (bookworm = debian12), so the binary
# links against the glibc the runtime image ships. Checked by scripts/test-deploy.

ARG RUST_VERSION=1.95
# Cargo.toml's package version; bumped with it (scripts/test-deploy fails when they differ).
ARG VERSION=0.1.0

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

# The image's version label is the binary's own version, or the build fails. Declared after the
# compile, so a new VERSION does not invalidate the cached build step.
ARG VERSION
RUN test "$(/out/sessionkeeper --version)" = "sessionkeeper ${VERSION}" \
    || { echo "VERSION=${VERSION} is not the binary's version ($(/out/sessionkeeper --version)): build with scripts/build-image" >&2; exit 1; }

# -------------------------------------------------------------- runtime stage
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime

# REVISION (the git commit), CREATED (RFC 3339 build time) and SOURCE (the repository's URL)
# have no default: only scripts/build-image (or your CI) knows them.
ARG VERSION
ARG REVISION
ARG CREATED
ARG SOURCE
LABEL org.opencontainers.image.title="sessionkeeper" \
      org.opencontainers.image.description="gRPC service that owns the lifecycle of AI-agent SDK session ids" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

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
