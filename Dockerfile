# rnn-sentiment server image: the gRPC service with the shipped models baked in.
#
#   docker build -t rnn-sentiment .                          # CPU torch from the PyTorch CPU index
#   docker run --rm -p 127.0.0.1:50051:50051 -p 127.0.0.1:9464:9464 rnn-sentiment
#   docker run --rm -v /srv/models:/models -e RNN_SENTIMENT_MODEL_DIR=/models rnn-sentiment
#
# GPU variant: torch built for CUDA and the server on `--device cuda`, on a CUDA base
# (run with `--gpus all` or the compose `gpu` profile; needs the NVIDIA container toolkit):
#
#   docker build -t rnn-sentiment:gpu --build-arg DEVICE=cuda \
#       --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .
#
# Build args:
#   BASE_IMAGE       any Debian/Ubuntu image; Python 3 is installed with apt when it has none
#   TORCH_INDEX_URL  extra pip index torch comes from (default: CPU wheels, so nobody pulls a
#                    multi-GB CUDA build by accident); empty: only the default index/PIP_OPTIONS
#   PIP_OPTIONS      extra pip options, e.g. `--index-url URL` for a private index
#   DEVICE           the server's default --device: auto (cuda when visible), cpu or cuda
#
# Behind a TLS-intercepting proxy or without the public indexes (CI here), put a CA bundle at
# .deploy-cache/pip/ca.crt and wheels in .deploy-cache/pip/wheels/ (git-ignored; the only part
# of .deploy-cache the build context takes): pip in the build then uses them.
# scripts/docker-pip-context.sh copies this machine's $PIP_CERT and $PIP_FIND_LINKS there.

ARG BASE_IMAGE=python:3.11-slim

# ---- python: the base plus a Python 3 with venv (a bare Debian base gets it from apt) ----
FROM ${BASE_IMAGE} AS python
RUN set -eu; \
    if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3 python3-venv; \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    fi

# ---- requirements: the server's requirements, read from pyproject.toml ----
# A stage of its own so that the deps stage copies only the resulting list: editing anything else
# in pyproject.toml (a dev extra, a tool's settings) leaves the torch layer cached.
FROM python AS requirements
ARG PIP_OPTIONS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=120
WORKDIR /src
# The optional local pip material: the bracket glob matches nothing for a plain clone, and
# constraints.txt keeps the COPY from having no source at all.
COPY constraints.txt .deploy-cach[e]/pip /pip-local/
COPY deploy/docker/pip /usr/local/bin/venv-pip
COPY pyproject.toml deploy/docker/server-requirements.py ./
# Python before 3.11 (an older CUDA base) has no tomllib: tomli, in a throwaway venv.
RUN set -eu; \
    if python3 -c 'import tomllib' 2>/dev/null; then python=python3; else \
        python3 -m venv /opt/venv; venv-pip install $PIP_OPTIONS tomli; python=/opt/venv/bin/python; \
    fi; \
    "$python" server-requirements.py pyproject.toml > requirements.txt

# ---- deps: a virtual environment with the server's dependencies, and nothing else ----
# A stage of its own so the runtime copies it as one cached layer: editing the sources
# rebuilds only the small app layer, never the 800 MB of torch.
FROM python AS deps
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_OPTIONS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_DEFAULT_TIMEOUT=120
RUN python3 -m venv /opt/venv
WORKDIR /src
COPY constraints.txt .deploy-cach[e]/pip /pip-local/
COPY deploy/docker/pip /usr/local/bin/venv-pip
COPY constraints.txt ./
COPY --from=requirements /src/requirements.txt ./
RUN set -eu; \
    venv-pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} $PIP_OPTIONS \
        -c constraints.txt -r requirements.txt; \
    # C++ headers, test binaries and protoc: only for building extensions and testing torch
    # itself (about 170 MB of the CPU wheel).
    site="$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"; \
    rm -rf "$site/torch/include" "$site/torch/test" "$site"/torch/bin/test_* "$site"/torch/bin/protoc*; \
    # The image never installs anything at run time: no pip in it (setuptools stays, torch
    # declares it).
    /opt/venv/bin/python -m pip uninstall -y -q pip

# ---- app: the rnn-sentiment package (with the shipped models) in /opt/app ----
FROM deps AS app
ARG PIP_OPTIONS=""
# pip back for this stage only (ensurepip is offline; setuptools, the build backend, is there).
RUN /opt/venv/bin/python -m ensurepip >/dev/null
COPY pyproject.toml README.md ./
COPY proto proto
COPY model model
COPY server server
COPY client client
COPY cli cli
# --no-deps: everything it needs is in /opt/venv. Files readable by the non-root user whatever
# modes they had in the build context (a checkpoint written through a temporary file is 0600).
RUN set -eu; \
    venv-pip install -q --no-deps --no-build-isolation --target /opt/app $PIP_OPTIONS .; \
    chmod -R a+rX /opt/app; \
    PYTHONPATH=/opt/app /opt/app/bin/rnn-sentiment serve --print-config-table >/dev/null

# ---- runtime: the dependencies and the app on the bare Python base, as a non-root user ----
FROM python AS runtime
ARG DEVICE=auto
RUN set -eu; \
    echo 'rnn:x:10001:10001:rnn-sentiment:/home/rnn:/usr/sbin/nologin' >> /etc/passwd; \
    echo 'rnn:x:10001:' >> /etc/group; \
    mkdir -p /home/rnn /models; \
    chown 10001:10001 /home/rnn /models
COPY --from=deps /opt/venv /opt/venv
COPY --from=app /opt/app /opt/app
COPY deploy/docker/healthcheck /usr/local/bin/rnn-sentiment-healthcheck
# Inside a container the server listens on every interface of the container's own network
# namespace: a published port (-p) and a Prometheus in another container arrive on its eth0,
# never on its loopback. The host decides what is published: publish on 127.0.0.1 (as above)
# unless a TLS-terminating balancer or firewall stands in front (docs/security.md).
ENV PATH=/opt/app/bin:/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/app \
    PYTHONUNBUFFERED=1 \
    HOME=/home/rnn \
    RNN_SENTIMENT_ADDRESS=0.0.0.0:50051 \
    RNN_SENTIMENT_METRICS_ADDRESS=0.0.0.0:9464 \
    RNN_SENTIMENT_LOG_FORMAT=json \
    RNN_SENTIMENT_DEVICE=${DEVICE}
# Other models: mount a directory of checkpoints here and set RNN_SENTIMENT_MODEL_DIR=/models.
VOLUME /models
USER 10001:10001
WORKDIR /home/rnn
EXPOSE 50051 9464
# SIGTERM drains: health NOT_SERVING, in-flight calls finish within --grace-seconds.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["rnn-sentiment-healthcheck"]
ENTRYPOINT ["rnn-sentiment", "serve"]
