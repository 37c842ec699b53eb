# The Chorus image for docker-compose.yml: Python, the dependencies, and the built browser bundle.
FROM node:20-bookworm-slim AS frontend
WORKDIR /src/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY frontend/ ./
RUN npm run build

FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PYTHONPATH=/app/platform:/app
WORKDIR /app
# torch from PyTorch's CPU index first: PyPI's Linux torch wheel bundles CUDA (gigabytes) that web and
# the default workers never use; requirements.txt's pin is then already met. A GPU image for the "ml"
# queue: --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 (or the CUDA version you run).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY requirements.txt ./
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX" "$(grep -E '^torch==' requirements.txt)" \
    && pip install --no-cache-dir -r requirements.txt
COPY . .
COPY --from=frontend /src/frontend/dist frontend/dist
RUN useradd --create-home chorus && mkdir -p /data/media && chown -R chorus /data /app
USER chorus
EXPOSE 8000
