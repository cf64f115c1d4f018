#!/usr/bin/env bash
# Quickstart, command 2: installs what is missing, then runs the whole test suite (npm test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run typecheck
npm test
