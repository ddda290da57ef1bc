# AllSource server image: a release build on Debian, run as a non-root user with the data on
# a volume.
#
#   docker build -t allsource .
#   docker run -d --name allsource -p 3900:3900 -v allsource-data:/var/lib/allsource \
#     -e ALLSOURCE__AUTH__JWT__SECRET="$(openssl rand -hex 32)" allsource
#
# Settings come from ALLSOURCE__SECTION__KEY variables (docs/OPERATIONS.md), or from a config
# file: mount it and run `serve --config /etc/allsource/allsource.toml`.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p allsource --bin allsource \
    && cp target/release/allsource /usr/local/bin/allsource

FROM debian:bookworm-slim
# curl: the health check. ca-certificates: webhooks, OTLP and S3 over TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/allsource --shell /usr/sbin/nologin allsource \
    && mkdir -p /var/lib/allsource /etc/allsource \
    && chown allsource:allsource /var/lib/allsource
COPY --from=build /usr/local/bin/allsource /usr/local/bin/allsource
USER allsource
WORKDIR /var/lib/allsource
VOLUME ["/var/lib/allsource"]
ENV ALLSOURCE__SERVER__HOST=0.0.0.0 \
    ALLSOURCE__STORAGE__DATA_DIR=/var/lib/allsource/data
EXPOSE 3900
# Ready: recovery has finished and the store serves.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD curl -fsS http://127.0.0.1:3900/health/ready || exit 1
# SIGTERM stops gracefully (in-flight appends finish, everything acknowledged is synced).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/allsource"]
CMD ["serve"]
