# The gateway's one image: API, worker, beat, Flower, migrations and the sandbox.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when they change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
 && useradd --system --uid 10001 --home-dir /app --no-create-home smsgw \
 && mkdir -p /var/lib/smsgw && chown smsgw /var/lib/smsgw
USER smsgw

EXPOSE 8000 5555 9808
ENTRYPOINT ["/app/scripts/entrypoint.sh"]
CMD ["smsgw", "api"]
