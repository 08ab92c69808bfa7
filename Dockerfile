# flowvoice server image.
#
# CPU (default):  docker build -t flowvoice .
# NVIDIA GPU:     docker build -t flowvoice:cuda \
#                   --build-arg BUILD_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04 \
#                   --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#                   --build-arg LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_CUDA=on" \
#                   --build-arg EXTRAS=offline,realtime,ollama,openai,kokoro .
# (docker-compose.gpu.yml sets these.) The CUDA build compiles llama.cpp with nvcc in the
# devel image and runs on the smaller runtime image. CUDA 12.8 and torch's cu128 wheels cover
# Turing (RTX 20xx, T4) to Blackwell (RTX 50xx) with an NVIDIA driver >= 570; for Pascal and
# Volta (GTX 10xx, P4, P40, V100) build with TORCH_INDEX=https://download.pytorch.org/whl/cu126.
# GGML_NATIVE=OFF: llama.cpp is built for every CPU and GPU generation, not for the machine
# that built the image. Models are not baked in: they live in the cache volume
# /home/flowvoice/.cache (Hugging Face hub cache, XTTS weights, the assembled Gemma GGUF and its English copy).
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG BUILD_IMAGE=${BASE_IMAGE}

FROM ${BUILD_IMAGE} AS build
ARG EXTRAS=offline,realtime,ollama,openai
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG LLAMA_CMAKE_ARGS=-DGGML_NATIVE=OFF
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
# needs it (coqui-tts also needs torchaudio and, from torch 2.9, torchcodec: one command keeps
# their versions matched); then flowvoice with its extras (llama-cpp-python compiles
# llama.cpp here, with CUDA when LLAMA_CMAKE_ARGS asks; nvcc links against the driver stub).
RUN pip install --upgrade pip \
    && case ",${EXTRAS}," in \
         *,coqui,*) pip install torch torchaudio torchcodec --index-url "${TORCH_INDEX}" ;; \
         *,kokoro,*|*,orpheus,*|*,turn-classifier,*) \
           pip install torch --index-url "${TORCH_INDEX}" ;; \
       esac \
    && if [ -d /usr/local/cuda/lib64/stubs ]; then \
         export LIBRARY_PATH="/usr/local/cuda/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}"; \
       fi \
    && CMAKE_ARGS="-DLLAVA_BUILD=OFF ${LLAMA_CMAKE_ARGS}" pip install ".[${EXTRAS}]" \
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
# FFmpeg's libraries for torchcodec (coqui-tts reads reference voices with it).
RUN case ",${EXTRAS}," in *,coqui,*) media=ffmpeg ;; *) media= ;; esac \
    && apt-get update \
    && apt-get install -y --no-install-recommends libportaudio2 libgomp1 espeak-ng ${media} \
    && rm -rf /var/lib/apt/lists/*
# The flowvoice user has uid 1000. Ubuntu 24.04 bases (the CUDA ones) already have a user
# with that id ("ubuntu"): it is renamed instead.
RUN existing="$(getent passwd 1000 | cut -d: -f1 || true)" \
    && if [ -n "${existing}" ]; then \
         usermod --login flowvoice --home /home/flowvoice --move-home \
           --shell /usr/sbin/nologin "${existing}" \
         && groupmod --new-name flowvoice "$(id -gn flowvoice)"; \
       else \
         useradd --create-home --uid 1000 --shell /usr/sbin/nologin flowvoice; \
       fi
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Fail the build, not the container, when the Coqui stack does not import (mismatched torch,
# torchaudio and torchcodec, or FFmpeg missing).
RUN case ",${EXTRAS}," in \
      *,coqui,*) python -c "import torchaudio, torchcodec.decoders, TTS.api" ;; \
    esac
# the shipped graphs, also at graphs/ so that `run graphs/NAME.yaml` works as in the repository
# (`run NAME` finds them inside the package from any folder); mount a folder of your own
# graphs over /app/graphs to change them without rebuilding
COPY flowvoice/graphs /app/graphs
ENV HF_HOME=/home/flowvoice/.cache/huggingface \
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
# Over HTTPS when FLOWVOICE_TLS_CERT or FLOWVOICE_TLS_SELF_SIGNED is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request; tls = bool(os.environ.get('FLOWVOICE_TLS_CERT') or os.environ.get('FLOWVOICE_TLS_SELF_SIGNED', '').lower() in ('1', 'true', 'yes')); urllib.request.urlopen('%s://127.0.0.1:%s/health' % ('https' if tls else 'http', os.environ.get('FLOWVOICE_PORT', '8000')), timeout=4, context=ssl._create_unverified_context())"]
ENTRYPOINT ["flowvoice"]
CMD ["run", "graphs/default.yaml"]
