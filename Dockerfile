# The patch release is pinned: a rebuild gets the same Python (bump it on purpose).
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STEMBOT_DB_PATH=/data/stembot.db \
    STEMBOT_HTTP_PORT=8080

RUN useradd --create-home --uid 10001 stembot \
    && mkdir /data && chown stembot:stembot /data

WORKDIR /app
# Dependencies first, at the versions constraints.txt pins (as README.md's commands install
# them): this layer is rebuilt only when they change, not on every code change.
COPY pyproject.toml constraints.txt ./
RUN python -m venv /app/.venv \
    && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && /app/.venv/bin/pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
# Then the code, without touching the dependencies.
COPY README.md LICENSE ./
COPY stembot ./stembot
RUN /app/.venv/bin/pip install --no-deps -c constraints.txt .

USER stembot
VOLUME ["/data"]
# /healthz on STEMBOT_HTTP_PORT (on 127.0.0.1 inside the container unless STEMBOT_HTTP_HOST
# says otherwise): healthy while every shard is connected and the database answers. With
# STEMBOT_HTTP_PORT emptied, `stembot healthcheck` checks only that the bot process (PID 1) runs.
# The start period covers the shards' IDENTIFYs, 5 s apart per bucket.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/app/.venv/bin/stembot", "healthcheck"]
# stembot stops taking requests and closes the database cleanly on SIGTERM (docker stop).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/.venv/bin/stembot"]
CMD ["run"]
