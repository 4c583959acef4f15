# kubepresence manager image, for users with a container engine (the project's own cluster
# builds the same layout without one, tests/cluster/kpcluster/imagebuild.py, and builds this
# file with buildah on a local base, tests/cluster/kpcluster/enginebuild.py).
# Build from the repository root:  docker build -f deploy/images/manager.Dockerfile -t kubepresence-manager:0.1.0 .
# (buildah/podman alike; BASE: any Debian-bookworm-like image with python3.11 and pip on PATH,
# e.g. --build-arg BASE=registry.example.com/mirror/python:3.11-slim-bookworm)
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE} AS wheels
WORKDIR /src
COPY constraints.txt ./
COPY packages/protocol packages/protocol
COPY packages/manager packages/manager
# Resolve once, against the project's constraints; the runtime stage installs exactly this set.
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt packages/protocol packages/manager

FROM ${BASE}
COPY --from=wheels /wheels /wheels
RUN pip install --no-cache-dir --no-deps --no-index --no-compile \
        --target /opt/kubepresence/site-packages /wheels/*.whl \
    && rm -rf /wheels /opt/kubepresence/site-packages/bin
ENV PYTHONPATH=/opt/kubepresence/site-packages PYTHONUNBUFFERED=1
ENTRYPOINT ["python3", "-m", "kubepresence.manager"]
