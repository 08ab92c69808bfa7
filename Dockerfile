# flowvoice server image.
#
# CPU (default):  docker build -t flowvoice .
# CUDA:           docker build -t flowvoice:cuda \
#                   --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#                   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 \
#                   --build-arg EXTRAS=offline,realtime,ollama,openai,kokoro .
# (docker-compose.gpu.yml sets these.) Models are not baked in: they live in the cache volume
# /home/flowvoice/.cache (Hugging Face hub cache, XTTS weights, the assembled Gemma GGUF).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ARG EXTRAS=offline,realtime,ollama,openai
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A CUDA base has no Python: install the distribution's (>= 3.10) when python3 is missing.
RUN if ! command -v python3 >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-dev python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake portaudio19-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY flowvoice ./flowvoice
# torch first, from the index matching the base (CPU or CUDA wheels), only when an extra
# needs it; then flowvoice with its extras (llama-cpp-python compiles llama.cpp here).
RUN pip install --upgrade pip \
    && case ",${EXTRAS}," in \
         *,kokoro,*|*,coqui,*|*,orpheus,*|*,turn-classifier,*) \
           pip install torch --index-url "${TORCH_INDEX}" ;; \
       esac \
    && CMAKE_ARGS="-DLLAVA_BUILD=OFF" pip install ".[${EXTRAS}]" \
    && case ",${EXTRAS}," in \
         *,kokoro,*) python -m spacy download en_core_web_sm ;; \
       esac

FROM ${BASE_IMAGE}
ARG EXTRAS=offline,realtime,ollama,openai
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
RUN if ! command -v python3 >/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN apt-get update \
    && apt-get install -y --no-install-recommends libportaudio2 libgomp1 espeak-ng \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /usr/sbin/nologin flowvoice
COPY --from=build /opt/venv /opt/venv
# the shipped graphs, also at graphs/ so that `run graphs/NAME.yaml` works as in the repository
# (`run NAME` finds them inside the package from any folder)
COPY flowvoice/graphs /app/graphs
ENV PATH=/opt/venv/bin:$PATH \
    HF_HOME=/home/flowvoice/.cache/huggingface \
    COQUI_MODEL_PATH=/home/flowvoice/.cache/flowvoice/coqui \
    FLOWVOICE_HOST=0.0.0.0 \
    FLOWVOICE_PORT=8000 \
    PYTHONUNBUFFERED=1
# the flowvoice user, by id so that runAsNonRoot checks can verify it
USER 1000:1000
WORKDIR /app
RUN mkdir -p /home/flowvoice/.cache/huggingface /home/flowvoice/.cache/flowvoice/coqui
VOLUME ["/home/flowvoice/.cache"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('FLOWVOICE_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["flowvoice"]
CMD ["run", "graphs/default.yaml"]
