# syntax=docker/dockerfile:1
# Trading Demo server image: daphne (via `manage.py serve`) on port 3000, background jobs
# leader-elected, gRPC services external. Build: docker build -t trading-demo .
# Migrations are a separate step: docker compose run --rm app python manage.py migrate
# scripts/check_image.sh performs these same install and start-up commands in a clean venv.

ARG PYTHON_IMAGE=python:3.12-slim

# --- builder: the pinned runtime dependencies in a venv ----------------------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# pip >= 25.1 understands dependency groups (--group); 26.0 is the version the project pins.
RUN pip install pip==26.0
WORKDIR /build
COPY pyproject.toml constraints.txt ./
RUN pip install -c constraints.txt --group runtime

# --- final: the venv, the source, collected static files, a non-root user ----------------------
FROM ${PYTHON_IMAGE} AS final
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_ENV=production \
    EMBEDDED_SERVICES=false \
    LOG_FORMAT=json \
    HOST=0.0.0.0 \
    PORT=3000
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home app
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY . .
# The dummy SECRET_KEY exists only for this RUN: settings refuse to load in production
# without one, and collectstatic signs nothing. It is not kept in the image's environment.
RUN DJANGO_ENV=production SECRET_KEY=build-only-collectstatic-key-not-kept \
    ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput \
    && mkdir -p /app/data \
    && chown app:app /app/data
USER 10001:10001
EXPOSE 3000
# Liveness only (the process answers HTTP): readiness is /health/ready, for load balancers.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "scripts/healthcheck.py"]
# `serve` runs daphne plus the leader-elected background jobs (market feed, outbox, expiries).
CMD ["python", "manage.py", "serve", "--host", "0.0.0.0", "--port", "3000"]
