# syntax=docker/dockerfile:1.7
# The mcp-warden sidecar: OAuth 2.1 / JWT authentication in front of an MCP server.
# Build from the repository root:
#   docker build -f docker/sidecar.Dockerfile -t ghcr.io/mcp-warden/mcp-warden-sidecar:$(version) .
# The chart's default image is ghcr.io/mcp-warden/mcp-warden-sidecar:<appVersion>.

# The builder's Rust must equal rust-toolchain.toml's channel, or rustup fetches another toolchain.
ARG RUST_IMAGE=docker.io/library/rust:1.95.0-bookworm
# The binary links libc, libm and libgcc_s (unwinding), glibc >= 2.36 (built on bookworm, its
# relocations are packed: sidecar/build.rs): distroless "cc" has exactly those (the "static" and
# "base" images lack libgcc_s). Measured with the workspace release
# profile: 10.8 MB stripped, 4.7 MB gzipped (fat LTO).
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
    cargo build --release --locked -p mcp-warden-sidecar \
 && mkdir -p /out \
 && for bin in mcp-warden-sidecar; do cp "target/release/$bin" /out/; done

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="mcp-warden-sidecar" \
      org.opencontainers.image.description="The mcp-warden sidecar: OAuth 2.1 / JWT authentication in front of an MCP server" \
      org.opencontainers.image.source="https://github.com/mcp-warden/mcp-warden" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/mcp-warden-sidecar /usr/local/bin/mcp-warden-sidecar
# distroless "nonroot": uid/gid 65532, no shell, no package manager. The injector runs the sidecar
# with a read-only root filesystem; nothing here writes to disk.
USER 65532:65532
# Public (8000) and admin (9090) ports of the injected sidecar.
EXPOSE 8000 9090
ENTRYPOINT ["/usr/local/bin/mcp-warden-sidecar"]
