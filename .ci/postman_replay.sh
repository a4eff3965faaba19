#!/usr/bin/env bash
# Replays the original system's Postman collection with newman against a real
# taskmgmt (gunicorn, SQLite, the demo): every request answers 2xx but the
# deliberate fixes. The collection lives beside the repo in ../shared, which a
# user's clone does not have, so this is a CI step, not part of `make test`.
# Usage: .ci/postman_replay.sh [collection.json]   (needs .venv: make setup)
set -euo pipefail
cd "$(dirname "$0")/.."

COLLECTION=${1:-../shared/seed/original-postman-collection.json}
if [ ! -f "$COLLECTION" ]; then
  echo "Postman replay skipped: no collection at $COLLECTION (only CI has ../shared)."
  exit 0
fi

# newman from the npm registry, pinned, kept in a cache dir outside the repo.
NEWMAN_VERSION=6.2.2
NEWMAN_DIR=${NEWMAN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/taskmgmt/newman-$NEWMAN_VERSION}
if [ ! -x "$NEWMAN_DIR/node_modules/.bin/newman" ]; then
  command -v npm >/dev/null || { apt-get update -q && apt-get install -y -q npm; }
  npm install --silent --no-audit --no-fund --prefix "$NEWMAN_DIR" "newman@$NEWMAN_VERSION"
fi

exec .venv/bin/python .ci/postman_replay.py "$COLLECTION" "$NEWMAN_DIR/node_modules/.bin/newman"
