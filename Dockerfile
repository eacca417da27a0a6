# syntax=docker/dockerfile:1
# The webhook-worker image: one static-ish binary on distroless, non-root.
#   docker build -t webhook-worker:0.1.0 .
#   docker run --rm -e DATABASE_URL=… -e WEBHOOK_ENCRYPTION_KEYS=… -p 9090:9090 webhook-worker:0.1.0 run
# The Helm chart (helm/webhook-delivery) runs it with args ["run"] and, as a hook, ["migrate"].

FROM rust:1-bookworm AS build
WORKDIR /src
# The workspace manifest, the crate, the migrations embedded by sqlx::migrate! and the test tree the
# crate's manifest names ([[test]] path) — nothing else of the repository is needed.
COPY Cargo.toml Cargo.lock ./
COPY worker worker
COPY schema schema
COPY tests tests
# Registry and target caches survive between builds (BuildKit); the binary is copied out of the
# cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p webhook-worker --bin webhook-worker --no-default-features \
 && install -D -m 0755 target/release/webhook-worker /out/webhook-worker \
 && strip /out/webhook-worker

# distroless/cc: glibc, libgcc and CA certificates (/etc/ssl/certs, read by the TLS verifier), no
# shell or package manager; the :nonroot variant runs as 65532:65532, matching the chart's
# securityContext (runAsNonRoot, runAsUser 65532, read-only root filesystem).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="webhook-worker" \
      org.opencontainers.image.description="Stateless workers that deliver signed webhooks from a PostgreSQL queue" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/webhook-worker /usr/local/bin/webhook-worker
USER 65532:65532
# /metrics, /healthz, /readyz (WEBHOOK_METRICS_ADDR, default 0.0.0.0:9090)
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/webhook-worker"]
CMD ["run"]
