# The fleet server processes (fleet ingest, and later fleet serve), for compose.yaml.
FROM python:3.11-slim
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY schemas schemas
COPY device-agent device-agent
COPY processing processing
COPY ingest ingest
COPY sql sql
COPY deploy deploy
RUN uv sync --frozen --no-dev
ENV PATH="/app/.venv/bin:$PATH" FLEET_METRICS_ADDR="0.0.0.0:9464"
USER nobody
ENTRYPOINT ["fleet"]
CMD ["ingest"]
