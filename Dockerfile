# syntax=docker/dockerfile:1
# icu-backdoor image. CPU by default; CUDA through a build argument:
#   docker build -t icu-backdoor .                                   # CPU, from requirements.lock
#   docker build --build-arg TORCH_INDEX=cu128 -t icu-backdoor:cu128 .  # CUDA 12.8 torch wheels
#   docker run --rm -v "$PWD/outputs:/app/outputs" icu-backdoor      # default experiment
#   docker run --rm icu-backdoor python -m src.run -m +sweep=quick   # any other command
# The CUDA image needs the NVIDIA Container Toolkit on the host (docker run --gpus all ...); the
# torch CUDA wheels bring their own CUDA runtime, so the base image stays python:3.11-slim.
FROM python:3.11-slim-bookworm

# cpu (default): every package, torch included, from requirements.lock with hashes.
# cu118/cu126/cu128/...: torch (same version as the lock) from https://download.pytorch.org/whl/<index>,
# everything else from requirements.lock.
ARG TORCH_INDEX=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged user (uid/gid 1000); give it your own ids at run time with --user "$(id -u):$(id -g)"
# when bind-mounting outputs/.
RUN groupadd --gid 1000 app && useradd --create-home --uid 1000 --gid 1000 --shell /bin/bash app
WORKDIR /app

COPY requirements.lock ./
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN if [ "$TORCH_INDEX" = "cpu" ]; then \
        pip install --no-cache-dir -r requirements.lock; \
    else \
        torch_version="$(sed -n 's/^torch==\([^+ ]*\).*/\1/p' requirements.lock)" \
        && pip install --no-cache-dir "torch==${torch_version}" \
               --index-url "https://download.pytorch.org/whl/${TORCH_INDEX}" \
        && awk '/^torch==/{skip=1; next} skip && /^[a-z0-9]/{skip=0} !skip' requirements.lock \
               | grep -v '^--extra-index-url' > /tmp/requirements-no-torch.lock \
        && pip install --no-cache-dir -r /tmp/requirements-no-torch.lock \
        && rm /tmp/requirements-no-torch.lock; \
    fi

COPY --chown=app:app . .
RUN pip install --no-cache-dir --no-deps -e . \
    && chown app:app /app

USER 1000:1000
CMD ["python", "-m", "src.run"]
