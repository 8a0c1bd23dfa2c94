# The fleet server processes (fleet ingest and fleet serve), for compose.yaml.
FROM python:3.11-slim
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY schemas schemas
COPY device-agent device-agent
COPY processing processing
COPY store store
COPY ingest ingest
COPY serve serve
COPY cli cli
COPY devtools devtools
COPY sql sql
COPY deploy deploy
# Only the production command and what it needs: no agent, simulator, benchmarks or local stack.
RUN uv sync --frozen --no-dev --package fleet-cli
ENV PATH="/app/.venv/bin:$PATH" FLEET_METRICS_ADDR="0.0.0.0:9464"
USER nobody
ENTRYPOINT ["fleet"]
CMD ["ingest"]
