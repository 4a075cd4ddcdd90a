# One image for every changewatch role; docker-compose.yml picks the role with `command:`.
#   worker   celery -A changewatch.worker worker --loglevel=INFO   (default CMD)
#   flower   celery -A changewatch.worker flower --port=5555
#   migrate  python -m changewatch.schema migrate
#   producer python -m changewatch.producer ...
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

# opencv-python-headless's wheel still links libglib/libgthread (not bundled); pillow-heif,
# torch and psycopg[binary] wheels bundle their own native libraries.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, from pyproject.toml alone, so code edits don't re-download torch (GBs).
COPY pyproject.toml /tmp/src/pyproject.toml
# The worker image: the producer's dependencies and the worker extra's.
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/src/pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['worker']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# CHANGEWATCH_PRECISION=int8 (CPU workers) compiles its model once with a C++ compiler
# and then loads it from CHANGEWATCH_MODEL_CACHE: `--build-arg INT8=1` adds g++. Run
# `python -m changewatch.worker prepare-model` on the workers' kind of CPU, with the
# cache on a volume, before scaling out (README, "INT8 on CPU workers").
ARG INT8=""
RUN if [ -n "$INT8" ]; then apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*; fi

# Then the package itself. It is installed, not run from a source checkout, so the image
# exercises the same packaging (e.g. schema/migrations/*.sql package data) users get.
COPY . /tmp/src
RUN pip install --no-cache-dir '/tmp/src[worker]' && rm -rf /tmp/src

# Non-root. The torch cache dir exists and is owned by the user so the compose named volume
# mounted there starts with the right owner (weights download once, survive rebuilds).
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin changewatch \
    && mkdir -p /home/changewatch/.cache/torch /home/changewatch/.cache/changewatch /app \
    && chown -R changewatch:changewatch /home/changewatch /app
ENV TORCH_HOME=/home/changewatch/.cache/torch
USER changewatch
WORKDIR /app

CMD ["celery", "-A", "changewatch.worker", "worker", "--loglevel=INFO"]
