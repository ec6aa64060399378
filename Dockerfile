# One image for all four services. The service is picked at run time:
#   docker run -e SERVICE_MODULE=dispatch -e PORT=8002 ... quick-response-dispatch
# runs `uvicorn --factory services.dispatch.app:create_app`.

# The dispatcher console's front-end packages (Leaflet), served by dispatch itself.
FROM node:20-slim AS console
WORKDIR /console
COPY services/dispatch/console/package.json services/dispatch/console/package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    HOST=0.0.0.0

WORKDIR /app

# Dependencies first, so a code change does not reinstall them.
COPY requirements/main.txt requirements/main.txt
RUN pip install --no-compile -r requirements/main.txt

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

COPY shared/ shared/
COPY services/ services/
COPY --from=console /console/node_modules services/dispatch/console/node_modules
COPY tools/ tools/
COPY migrations/ migrations/

USER app

# PORT and SERVICE_MODULE come from the environment (docker-compose.yml sets both).
EXPOSE 8001 8002 8003 8004

HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-m", "tools.healthcheck", "/healthz"]

CMD ["sh", "-c", "exec uvicorn --factory \"services.${SERVICE_MODULE:?set SERVICE_MODULE, e.g. intake}.app:create_app\" --host \"$HOST\" --port \"${PORT:?set PORT}\" --proxy-headers --forwarded-allow-ips='*' --no-access-log --timeout-graceful-shutdown 10"]
