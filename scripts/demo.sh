#!/usr/bin/env bash
# Installs Chorus and runs the demo: web server, Celery worker and scheduler, embedded PostgreSQL and
# Redis (set DATABASE_URL / REDIS_URL to use external ones), and a ready-to-classify galaxy project.
# Options go to `manage.py demo`: --sample small|gz1_2000, --crowd N [--crowd-rate R] (simulated volunteers).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python manage.py demo "$@"
