# syntax=docker/dockerfile:1
# Trading Demo server image, one image for every process of compose.yaml: by default gunicorn
# serving HTTP on $PORT (8000); `uvicorn config.asgi:serving_application --factory ...` for
# WebSockets; `python manage.py run_jobs` for the background jobs; gRPC services external.
# Build: docker build -t trading-demo .
# Migrations are a separate step: docker compose run --rm web python manage.py migrate
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
    PORT=8000
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
EXPOSE 8000
# Liveness only (the process answers HTTP on $PORT): readiness is /health/ready, for load
# balancers. compose.yaml disables it for `jobs`, which serves no HTTP.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "scripts/healthcheck.py"]
CMD ["gunicorn", "--config", "config/gunicorn.conf.py", "config.wsgi:application"]
