#!/usr/bin/env bash
# Quickstart, command 1: installs what is missing, then runs the demo on the embedded local stack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm run demo
