# syntax=docker/dockerfile:1
# Build: docker build -t webhook-worker .   Run: docker run webhook-worker run
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY worker worker
COPY schema schema
COPY tests tests
RUN cargo build --release --locked -p webhook-worker --bin webhook-worker \
 && strip target/release/webhook-worker

# distroless/cc: glibc and CA certificates (the platform verifier reads /etc/ssl/certs), no shell,
# runs as the unprivileged `nonroot` user (65532), matching the chart's securityContext.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/webhook-worker /usr/local/bin/webhook-worker
USER 65532:65532
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/webhook-worker"]
CMD ["run"]
