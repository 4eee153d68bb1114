# DataPulse container image: `datapulse serve` (the demo tools, or your app) configured only from the environment.
#
#   docker build -t datapulse .                                          (or: podman build --format docker ...)
#   docker run --rm -p 8000:8000 -e DATAPULSE_TOKEN="$(openssl rand -hex 32)" datapulse
#
# Build arguments (all optional; nothing machine-specific is written here):
#   BASE       a Debian-family image with Python >= 3.11 as `python3` and its `venv` module (Debian:
#              python3 + python3-venv). Default: the official python:3.12-slim. Both stages use it, so the
#              interpreter the venv was made with is the one it runs with.
#   INDEX_URL  the package index pip installs from. Empty: the base's own pip configuration decides
#              (/etc/pip.conf, PIP_* variables in its ENV: index, mirror, `cert` for a site's own CA), else PyPI.
#
# See deploy/README.md for the settings a production container must set (at least DATAPULSE_TOKEN or
# DATAPULSE_TOKENS, or JWT_ISSUER) and for deploy/compose.yaml.

ARG BASE=python:3.12-slim

# ---------------------------------------------------------------------------------------------------------------
# Build stage: a venv at /opt/datapulse/venv holding exactly uv.lock's versions (checked by sha256) and DataPulse
# itself as a wheel built from this source. Nothing from this stage but that venv reaches the image.
# ---------------------------------------------------------------------------------------------------------------
FROM ${BASE} AS build

ARG INDEX_URL=""
# PATH: a base made from a tarball (podman import, mmdebstrap) has no ENV at all; keep the base's PATH when it has
# one. pip: no cache (nothing to reuse in a one-shot build layer), no prompts, no version nag. uv: only ever reads
# uv.lock here (--offline), never downloads a Python (the base's is the one the image runs), and would trust the
# system CA store (as scripts/install.sh sets it) if it ever went online.
ENV PATH=${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin} \
    PIP_NO_CACHE_DIR=1 \
    PIP_NO_INPUT=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_OFFLINE=1 \
    UV_NO_CACHE=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_SYSTEM_CERTS=1

WORKDIR /src

# uv itself, pinned by hash (scripts/lock/uv.txt, as scripts/install.sh does), in a throwaway venv whose pip
# (the base's own, so the base's pip.conf / PIP_CERT / index apply) also does every download below.
COPY scripts/lock/uv.txt scripts/lock/uv.txt
RUN python3 -m venv /opt/build/tools \
 && /opt/build/tools/bin/pip install ${INDEX_URL:+--index-url "$INDEX_URL"} --require-hashes --no-deps \
      -r scripts/lock/uv.txt

# The dependencies, before the source so this layer is reused until uv.lock or pyproject.toml change.
# uv export turns uv.lock into a requirements file with every file's sha256 and the platform markers (no dev or
# test groups, no extras, not the project itself); pip installs it in hash-checking mode, so a file that differs
# from the lock by one byte fails the build. The venv has no pip of its own: pip --python installs into it.
COPY pyproject.toml uv.lock ./
RUN UV_PYTHON="$(command -v python3)" /opt/build/tools/bin/uv export --quiet --frozen --format requirements-txt \
      --no-dev --no-default-groups --no-emit-project --output-file /opt/build/requirements.txt \
 && python3 -m venv --without-pip /opt/datapulse/venv \
 && /opt/build/tools/bin/pip --python /opt/datapulse/venv/bin/python install ${INDEX_URL:+--index-url "$INDEX_URL"} \
      --require-hashes --no-deps -r /opt/build/requirements.txt

# DataPulse itself: a wheel built from this source (hatchling, fetched for the build only: it is not in the image),
# installed without dependencies (they are all above, at the locked versions) and not editable (no link back to
# /src, which the image does not have). `pip check` fails the build if anything the wheel needs is missing.
COPY README.md ./
COPY src ./src
RUN /opt/build/tools/bin/pip wheel ${INDEX_URL:+--index-url "$INDEX_URL"} --no-deps --wheel-dir /opt/build/dist . \
 && /opt/build/tools/bin/pip --python /opt/datapulse/venv/bin/python install --no-deps /opt/build/dist/*.whl \
 && /opt/build/tools/bin/pip --python /opt/datapulse/venv/bin/python check \
 && /opt/datapulse/venv/bin/datapulse --version

# ---------------------------------------------------------------------------------------------------------------
# Runtime stage: the same base, the venv, and a non-root user. No compilers, no uv, no pip in the venv, no source.
# ---------------------------------------------------------------------------------------------------------------
FROM ${BASE} AS runtime

# A fixed uid/gid (10001, as deploy/kubernetes runs it with runAsUser), so volume permissions and
# runAsUser/runAsNonRoot policies can name it. No home directory, no login shell: it only runs the server.
# (--no-log-init: no sparse /var/log/lastlog entry sized by the uid.)
RUN groupadd --gid 10001 datapulse \
 && useradd --uid 10001 --gid datapulse --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      --no-log-init datapulse

# The venv, owned by root: the server cannot modify its own code (the image also runs on a read-only root).
COPY --from=build /opt/datapulse/venv /opt/datapulse/venv

# PATH: the venv first (`datapulse`, `python`), then the base's PATH (or the standard one for a base without ENV).
# DATAPULSE_HOST: listen on every interface of the container (DataPulse's default, 127.0.0.1, is unreachable from
# outside it); DataPulse then requires auth, so a token or JWT issuer must be set at `docker run` (see above).
# Python: log lines leave at once; no .pyc written at run time (the venv is precompiled and read-only).
ENV PATH=/opt/datapulse/venv/bin:${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin} \
    DATAPULSE_HOST=0.0.0.0 \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# `datapulse serve module:attribute` imports the app from the working directory: mount or COPY it here.
WORKDIR /app
USER 10001:10001
# DATAPULSE_PORT's default. Publish whatever DATAPULSE_PORT you set.
EXPOSE 8000

# /health: no auth, never touches Redis, 200 while the process serves (liveness). Python's stdlib, since slim
# images have no curl. It follows the settings the server itself reads: DATAPULSE_PORT; https when
# DATAPULSE_SSL_CERTFILE is set (not verified: it is the container's own certificate); and a Host header
# DATAPULSE_ALLOWED_HOSTS accepts (its first entry, else DataPulse answers 421). No proxy (*_PROXY variables
# set for outbound calls must not catch a request to 127.0.0.1). Docker and podman need `--format docker` images
# to keep HEALTHCHECK (OCI image config has no field for it).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["/opt/datapulse/venv/bin/python", "-c", "import os, ssl, urllib.request as r; env = os.environ.get; tls = bool(env('DATAPULSE_SSL_CERTFILE')); host = (env('DATAPULSE_ALLOWED_HOSTS') or '*').split(',')[0].strip().removesuffix(':*'); url = ('https' if tls else 'http') + '://127.0.0.1:' + (env('DATAPULSE_PORT') or '8000') + '/health'; request = r.Request(url, headers={} if host in ('', '*') else {'Host': host}); r.build_opener(r.ProxyHandler({}), r.HTTPSHandler(context=ssl._create_unverified_context())).open(request, timeout=3)"]

# `docker run IMAGE` serves; `docker run IMAGE serve my_module:app`, `... config claude`, `... bridge -- CMD`
# run the other subcommands. Every setting comes from DATAPULSE_* variables (`datapulse serve --help` lists them):
# no secret is baked into the image. SIGTERM (docker stop) drains open streams for up to
# DATAPULSE_GRACEFUL_SHUTDOWN_TIMEOUT_S (10 s): give `docker stop` a longer timeout (-t 15).
ENTRYPOINT ["datapulse"]
CMD ["serve"]
