#!/usr/bin/env bash
# Compiles and lints infra/ with the Bicep CLI, warnings treated as errors, then checks what `azd
# up` depends on in the template as Azure would evaluate it (scripts/deploy-check.ts, one check per
# deployment defect found; needs `npm ci`). The CLI comes from NuGet (package
# Azure.Bicep.CommandLine.linux-x64) through a tools-only project in .ci/bicep.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v dotnet >/dev/null 2>&1; then
  echo "bicep-check: the .NET SDK (dotnet) is needed to restore the Bicep CLI from NuGet" >&2
  exit 1
fi
dotnet restore .ci/bicep/bicep.csproj --verbosity quiet >/dev/null
bicep=$(find .ci/bicep/packages/azure.bicep.commandline.linux-x64 -path '*/tools/bicep' -type f | head -n 1)
chmod +x "$bicep"
echo "bicep-check: $("$bicep" --version)"
out=$(mktemp -d)
status=0
for file in infra/main.bicep; do
  if ! diagnostics=$("$bicep" build "$file" --outdir "$out" 2>&1) || [ -n "$diagnostics" ]; then
    echo "$diagnostics"; status=1
  fi
  if ! diagnostics=$("$bicep" lint "$file" 2>&1) || [ -n "$diagnostics" ]; then
    echo "$diagnostics"; status=1
  fi
done
rm -rf "$out"
if [ $status -ne 0 ]; then
  echo "bicep-check: failed (warnings count as errors)" >&2
  exit 1
fi
echo "bicep-check: infra/main.bicep builds and lints clean"
npm run --silent build:tools
node build/scripts/deploy-check.js "$bicep"
