# batchops image: one image for every role, chosen by the command (see docker-compose.yml).
#   docker build -t batchops .                              # the service
#   docker build --build-arg EXTRAS=tracing -t batchops .   # with OpenTelemetry tracing
#   docker run --rm batchops --help
# Multi-stage: wheels of batchops and every dependency are built with the full toolchain, then
# installed offline into a slim image that runs as an unprivileged user.

FROM python:3.11-slim AS build
ARG EXTRAS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY publisher ./publisher
COPY consumer ./consumer
RUN pip wheel --wheel-dir /wheels ".${EXTRAS:+[$EXTRAS]}"

FROM python:3.11-slim AS runtime
ARG EXTRAS=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BATCHOPS_LOG_FORMAT=json
# No login shell and no home: the service writes nothing to disk.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin batchops
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "batchops${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /wheels
WORKDIR /app
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["batchops"]
CMD ["serve"]
