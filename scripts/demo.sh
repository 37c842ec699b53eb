#!/usr/bin/env bash
# Installs Chorus and runs the demo: web server, Celery worker and scheduler, embedded PostgreSQL and
# Redis (set DATABASE_URL / REDIS_URL to use external ones), and a ready-to-classify galaxy project.
# Options go to `manage.py demo`: --sample small|gz1_2000, --crowd N [--crowd-rate R] (simulated volunteers),
# --galaxies N, --machine-settings JSON, --stop-servers. Ctrl+C stops everything it started, the
# embedded PostgreSQL and Redis included; running it again resumes on the same database (var/).
set -euo pipefail
cd "$(dirname "$0")/.."
# Bad --crowd / --crowd-rate / --galaxies values: a clear error before anything is installed or started.
"${PYTHON:-python3}" platform/projects/demo_options.py "$@"
bash scripts/install.sh
exec .venv/bin/python manage.py demo "$@"
