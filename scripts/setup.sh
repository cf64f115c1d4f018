#!/usr/bin/env bash
# Installs what inboxq's demo and tests need on a Debian machine, and nothing that is already there:
#   - Debian packages: dovecot-imapd and dovecot-lmtpd (the IMAP server of the local stack), openssl
#   - npm dependencies (npm ci), Node.js 22 among them as the npm package `node`
# Needs Node.js 20+ with npm on PATH to start with. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -x /usr/sbin/dovecot ] || missing+=(dovecot-imapd)
[ -x /usr/lib/dovecot/lmtp ] || missing+=(dovecot-lmtpd)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "setup: npm is missing. Install Node.js 20 or later with npm first (Debian: apt-get install nodejs npm)." >&2
  exit 1
fi
if [ ! -x node_modules/.bin/vitest ] || [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi
echo "setup: ready (Node $(node_modules/.bin/node --version) for the project, Dovecot $(/usr/sbin/dovecot --version | cut -d' ' -f1))"
