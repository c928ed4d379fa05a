FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STEMBOT_DB_PATH=/data/stembot.db

RUN useradd --create-home --uid 10001 stembot \
    && mkdir /data && chown stembot:stembot /data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY stembot ./stembot
# The same install as README.md's run command, into a virtual environment.
RUN python -m venv /app/.venv && /app/.venv/bin/pip install .

USER stembot
VOLUME ["/data"]
# stembot stops taking requests and closes the database cleanly on SIGTERM (docker stop).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/app/.venv/bin/stembot"]
CMD ["run"]
