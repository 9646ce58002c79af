# bids_vem container image: CUDA-enabled PyTorch, models baked in at build time, runs offline.
#
#   docker build -t bidsvem/bids_vem:0.1.0 \
#       --build-arg VERSION=0.1.0 --build-arg VCS_REF=$(git rev-parse HEAD) \
#       --build-arg MODEL_SPECS="sentence:all-MiniLM-L6-v2 openclip:ViT-B-32@laion2b_s34b_b79k" .
#   docker run --rm --gpus all --read-only -u $(id -u):$(id -g) \
#       -v /data/ds:/data:ro -v /data/out:/out -v /scratch/work:/work \
#       bidsvem/bids_vem:0.1.0 /data /out participant -w /work ...
#
# Two stages: the builder installs into a virtual environment and downloads the models; the
# final image copies only those two folders (no pip, no caches, no build files).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
# PyPI's Linux torch wheels are the CUDA build. A CPU-only (much smaller) image:
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" torch torchvision; \
    fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bids_vem ./bids_vem
RUN pip install --no-cache-dir . \
    && pip uninstall --yes pip setuptools wheel \
    && rm -rf /src
# Model specs to bake into the image (space-separated; empty: none). `bids_vem models fetch`
# lays them out the way the model search reads them; BIDS_VEM_MODEL_DIR points runs at them.
ARG MODEL_SPECS=""
RUN mkdir -p /opt/bids_vem/models \
    && if [ -n "$MODEL_SPECS" ]; then \
        HF_HUB_OFFLINE=0 HF_HOME=/tmp/hf-home bids_vem models fetch --dest /opt/bids_vem/models $MODEL_SPECS \
        && find /opt/bids_vem/models -type d -name .cache -prune -exec rm -rf {} + \
        && rm -rf /tmp/hf-home; \
    fi

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG VERSION=0.1.0
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
ARG SOURCE=https://github.com/bids-vem/bids_vem
ARG MODEL_SPECS=""
LABEL org.opencontainers.image.title="bids_vem" \
      org.opencontainers.image.description="BIDS App: language-aligned vision models as voxelwise encoding models of fMRI" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="bids_vem developers" \
      org.bids-vem.models="${MODEL_SPECS}"
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/bids_vem/models /opt/bids_vem/models
# a non-root user whose home any uid may write to (docker run -u $(id -u):$(id -g))
RUN useradd --create-home --home-dir /home/bidsvem --uid 1000 --user-group --shell /bin/bash bidsvem \
    && chmod -R go=u /home/bidsvem
# one thread per process by default: parallelism comes from --nprocs and --omp-nthreads
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/bidsvem \
    OMP_NUM_THREADS=1 \
    MKL_NUM_THREADS=1 \
    OPENBLAS_NUM_THREADS=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    BIDS_VEM_MODEL_DIR=/opt/bids_vem/models \
    BIDS_VEM_DOCKER_TAG=bidsvem/bids_vem:${VERSION} \
    MPLBACKEND=Agg \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    NIPYPE_NO_ET=1
USER bidsvem
WORKDIR /tmp
ENTRYPOINT ["bids_vem"]
