# syntax=docker/dockerfile:1.7
# The mcp-warden operator: McpAuthPolicy controller and sidecar-injecting admission webhook.
# Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/mcp-warden/mcp-warden-operator:$(version) .
# The chart's default image is ghcr.io/mcp-warden/mcp-warden-operator:<appVersion>.

# The builder's Rust must equal rust-toolchain.toml's channel, or rustup fetches another toolchain.
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The workspace's [profile.release] (fat LTO, stripped) is the one images and benchmarks share.
ENV CARGO_TERM_COLOR=never
COPY . .
# Cache mounts keep the registry and target dir between builds; the binaries are copied out of
# the cache because a cache mount is not part of the layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p mcp-warden-operator \
 && mkdir -p /out \
 && for bin in mcp-warden-operator mcp-warden; do cp "target/release/$bin" /out/; done

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="mcp-warden-operator" \
      org.opencontainers.image.description="The mcp-warden operator: McpAuthPolicy controller and sidecar-injecting admission webhook" \
      org.opencontainers.image.source="https://github.com/mcp-warden/mcp-warden" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/mcp-warden-operator /usr/local/bin/mcp-warden-operator
COPY --from=build /out/mcp-warden /usr/local/bin/mcp-warden
# distroless "nonroot": uid/gid 65532 (the chart's runAsUser), no shell, no package manager.
USER 65532:65532
# Admin (/metrics /healthz /readyz) and HTTPS webhook ports.
EXPOSE 9090 9443
ENTRYPOINT ["/usr/local/bin/mcp-warden-operator"]
