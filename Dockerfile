# wasmscaler: a small static image (distroless, non-root).
#
#   docker build -t wasmscaler:0.1.0 .
#
# Stage 1 builds a fully static binary against musl; stage 2 holds only that binary.
FROM docker.io/library/rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add x86_64-unknown-linux-musl
WORKDIR /src
COPY . .
# Without debug info and symbols the static binary is ~43 MB instead of ~270 MB.
ENV CARGO_PROFILE_RELEASE_DEBUG=false \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN cargo build --release --locked --target x86_64-unknown-linux-musl -p wasmscaler \
 && cp target/x86_64-unknown-linux-musl/release/wasmscaler /wasmscaler

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /wasmscaler /usr/local/bin/wasmscaler
# The chart mounts writable volumes here; the root filesystem stays read-only.
ENV WASMSCALER_STATE_DIR=/var/lib/wasmscaler \
    WASMSCALER_CACHE_DIR=/var/cache/wasmscaler
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wasmscaler"]
CMD ["controller", "--listen=0.0.0.0:8080"]
