# One image for every refundflow role: api, worker, setup, migrate, check.
#   docker build -t refundflow .
#   docker run --rm refundflow check

# ---- build: a wheel of refundflow and of everything it needs
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY refundflow ./refundflow
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# ---- run: the wheels only, as a user without privileges
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    REFUNDFLOW_LOG_FORMAT=json \
    REFUNDFLOW_DATA_DIR=/var/lib/refundflow
RUN useradd --system --uid 10001 --home-dir /var/lib/refundflow --create-home refundflow
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels refundflow && rm -rf /wheels
USER refundflow
WORKDIR /var/lib/refundflow
EXPOSE 8000 9000
ENTRYPOINT ["refundflow"]
CMD ["--help"]
