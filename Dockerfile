FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=arbitrage.settings

WORKDIR /app

# Dependencies first, so code changes do not invalidate this layer.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .

# Run as an unprivileged user; ARBITRAGE_VAR_DIR (/app/var) must stay writable.
RUN useradd --create-home --uid 1000 app \
    && mkdir -p /app/var \
    && chown -R app:app /app/var
USER app

EXPOSE 8000

CMD ["gunicorn", "arbitrage.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "4", "--access-logfile", "-"]
