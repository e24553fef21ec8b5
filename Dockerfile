# Image for docker and kubernetes work pools: the project and all integrations installed.
# Build:  docker build -t prefect-ingest:latest .
# The deployments use module entrypoints (flows.<module>:<flow>), so the flow code is
# imported from the installed package and no pull step or working directory is needed.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DO_NOT_TRACK=1 \
    INGEST_LEDGER_PATH=/data/ingest/ledger.db \
    INGEST_LANDING_DIR=/data/ingest/landing

# openssh-client: `ssh-keyscan` for pinning SFTP host keys; tini: signal forwarding;
# gnupg: `gpg` decrypts PGP deliveries (a source with unpack pgp/auto).
RUN apt-get update \
 && apt-get install -y --no-install-recommends openssh-client tini gnupg \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/prefect/ingest
COPY pyproject.toml README.md constraints.txt ./
COPY blocks ./blocks
COPY pipeline ./pipeline
COPY ops ./ops
COPY flows ./flows
RUN pip install -c constraints.txt ".[all]" \
 && python -c "import blocks, flows.local_folder, ops.cli" \
 && useradd --create-home --uid 10001 ingest \
 && mkdir -p /data/ingest \
 && chown -R ingest /data/ingest
COPY prefect.yaml ./

USER ingest
VOLUME ["/data/ingest"]
# Prefect turns SIGTERM into SIGINT for flow runs; tini forwards the signal to the process.
ENTRYPOINT ["tini", "--"]
CMD ["prefect", "version"]
