# syntax=docker/dockerfile:1
# One image for every process: scheduler (default command), API, migrations, backtests.
# Build: docker build -t ai-trader .

# --- build stage: resolve and install the pinned requirements into a virtualenv --------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt requirements-api.txt /tmp/req/
RUN /opt/venv/bin/pip install --upgrade pip \
 && /opt/venv/bin/pip install -r /tmp/req/requirements.txt -r /tmp/req/requirements-api.txt

# --- runtime stage: the virtualenv and the code, run as an unprivileged user -----------------------
FROM python:3.11-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LOG_FORMAT=json \
    HEALTHCHECK_URL=http://127.0.0.1:9101/metrics
RUN groupadd --system --gid 10001 trader \
 && useradd --system --uid 10001 --gid trader --home-dir /app --shell /usr/sbin/nologin trader
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --chown=trader:trader alembic.ini main.py scheduler_main.py backtest.py ./
COPY --chown=trader:trader src ./src
COPY --chown=trader:trader backend ./backend
COPY --chown=trader:trader scripts ./scripts
COPY --chown=trader:trader backtest_data ./backtest_data
COPY --chown=trader:trader strategies ./strategies
RUN mkdir -p /app/data /app/reports && chown trader:trader /app/data /app/reports
USER trader
VOLUME ["/app/data"]
EXPOSE 8000 9101
# The scheduler serves its metrics on 9101; the API service overrides HEALTHCHECK_URL with its /health.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)" "$HEALTHCHECK_URL"
CMD ["python", "scheduler_main.py"]
