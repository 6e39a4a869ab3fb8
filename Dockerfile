# Multi-stage: build a wheel with the toolchain, run it slim and as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY publisher ./publisher
COPY consumer ./consumer
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app batchops
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER batchops
ENV BATCHOPS_LOG_FORMAT=json
ENTRYPOINT ["batchops"]
CMD ["serve"]
