#!/usr/bin/env bash
# `npm start`: runs the app as the Functions runtime would. With Azure Functions Core Tools
# installed, that is `func start`; without it (Core Tools can't be installed on some machines),
# inboxq's local host (localstack/host): the real @azure/functions programming model and host.json's
# queue and timer rules, re-implemented. Arguments go to whichever runs.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v func >/dev/null 2>&1; then
  echo "npm start: Azure Functions Core Tools found: func start"
  npm run --silent build
  exec func start "$@"
fi
echo "npm start: Core Tools not installed: running inboxq's local host (see README, Running locally)"
npm run --silent build
npm run --silent build:tools
exec node build/localstack/host/main.js --app . "$@"
