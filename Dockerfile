# The Pectus aggregator. Build: docker build -t pectus-aggregator .
# Run:   docker run -d -h pectus-prd -p 8300:8300 -v /srv/pectus/data:/usr/src/app/data \
#            -e SENTRY_DSN pectus-aggregator
FROM python:3.12-slim

# The container's host name (docker run -h NAME) is recorded as the aggregator's host name in the
# metadata of every run and in its CSV export.
WORKDIR /usr/src/app
COPY pyproject.toml README.md ./
COPY pectus ./pectus
RUN pip install --no-cache-dir '.[postgresql]' \
    && useradd --system --uid 10001 --home-dir /usr/src/app pectus \
    && mkdir -p /usr/src/app/data && chown pectus /usr/src/app/data

USER pectus
VOLUME ["/usr/src/app/data"]
EXPOSE 8300
ENV AGGREGATOR_PORT=8300
# Passed through from `docker run -e`: SENTRY_DSN (error reports; off when unset),
# PECTUS_ACCEPT_NEW_ENGINES (trust engines on first use; off), PECTUS_SIGNING_KEY_FILE (the chain
# signing key, best on a secrets mount), ENABLE_AZURE_AUTHENTICATION, AZURE_DIRECTORY_TENANT_ID,
# AZURE_APPLICATION_CLIENT_ID, PECTUS_OIDC_AUTHORITY (user sign-in; docs/deployment.md),
# PECTUS_DATABASE_URL (the event store in PostgreSQL instead of the data volume's SQLite file).
# Engines are enrolled with `docker exec CONTAINER pectus-aggregator --data-dir /usr/src/app/data
# engines enroll ENGINE_ID`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"AGGREGATOR_PORT\"]}/health', timeout=4)"
CMD ["sh", "-c", "exec pectus-aggregator --host 0.0.0.0 --port ${AGGREGATOR_PORT} --data-dir /usr/src/app/data"]
