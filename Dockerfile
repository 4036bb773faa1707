# The eldercare image: one image for every eldercare process (migrate, broker-sync, ingest, api);
# docker-compose.yml picks the subcommand.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid, so that files on volumes have a predictable owner. (broker-sync overrides it with
# Mosquitto's uid 1883, see docker-compose.yml.)
RUN groupadd --system --gid 10001 eldercare \
    && useradd --system --uid 10001 --gid eldercare --create-home --home-dir /home/eldercare \
       --shell /usr/sbin/nologin eldercare

# Dependencies and the package come from pyproject.toml; the source tree is not kept in the image.
COPY . /tmp/src
RUN pip install /tmp/src && rm -rf /tmp/src

USER eldercare
WORKDIR /home/eldercare

ENTRYPOINT ["eldercare"]
CMD ["--help"]
