# persona-ingest: the build in a Rust image, the binary alone in a small Debian image.
#
#   docker build -t persona-ingest .
#   docker run -e REDIS_URL=redis://redis:6379/0 -e DATABASE_URL=postgres://... \
#     -e ENGINE__STORE__KIND=chroma -e CHROMA_URL=http://chroma:8000 \
#     -v /srv/personas:/data:ro -p 8080:8080 persona-ingest
FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin persona-ingest \
 && strip target/release/persona-ingest

FROM debian:bookworm-slim
# rustls needs no OpenSSL; the CA bundle is for a database or Chroma behind TLS with the
# system's roots.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --create-home --home-dir /var/lib/persona-ingest persona-ingest
COPY --from=build /src/target/release/persona-ingest /usr/local/bin/persona-ingest
USER persona-ingest
WORKDIR /var/lib/persona-ingest
# The corpora are mounted at /data; the HTTP server listens on every interface of the
# container (publish the port, or set ENGINE__HTTP__TOKEN).
ENV ENGINE__DATA_ROOT=/data \
    ENGINE__HTTP__LISTEN=0.0.0.0:8080
EXPOSE 8080
# SIGTERM: intake stops, running work gets worker.shutdown_grace (30 s) to finish, the rest is
# requeued. Give `docker stop` more than that: docker stop -t 60.
STOPSIGNAL SIGTERM
ENTRYPOINT ["persona-ingest"]
CMD ["run"]
