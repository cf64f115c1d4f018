#!/bin/sh
# azd hooks (azure.yaml). azd runs them with the environment's values as environment variables.
#
#   preprovision  1. Gives a new deployment a vault name of its own (INBOXQ_VAULT_SUFFIX): a vault
#                    deleted by `azd down` is kept, name and all, for 90 days (purge protection), and
#                    a provision that reused the name would fail until then. A deployment that
#                    already has a vault keeps it.
#                 2. Builds INBOXQ_APP_SETTINGS, the `appSettings` parameter, from every
#                    INBOXQ_<KEY>__<NAME> value of the environment (`azd env set INBOXQ_SALES__MAILBOX
#                    sales@contoso.com`), so the per-mailbox settings are written at every provision
#                    instead of being replaced by it. INBOXQ_EXTRA_SETTINGS (NAME=value pairs
#                    separated by ';') adds settings the Bicep has no parameter for.
#   postdown      The next provision after `azd down` gets a new vault name.
set -eu

new_suffix() {
  od -An -N3 -tx1 /dev/urandom | tr -d ' \n'
}

case "${1:-}" in
  preprovision)
    if [ -z "${INBOXQ_VAULT_SUFFIX:-}" ] && [ -z "${AZURE_KEY_VAULT_NAME:-}" ]; then
      suffix=$(new_suffix)
      azd env set INBOXQ_VAULT_SUFFIX "$suffix"
      echo "inboxq: this deployment's vault name ends in -$suffix (INBOXQ_VAULT_SUFFIX)"
    fi
    settings=""
    # Names are upper-case letters, digits and underscores, so the list splits on newlines safely.
    for name in $(env | sed -n 's/^\(INBOXQ_[A-Z][A-Z0-9]*__[A-Z0-9_]*\)=.*/\1/p' | sort); do
      value=$(printenv "$name")
      case "$value" in
        *";"*)
          echo "inboxq: $name holds a ';', which INBOXQ_APP_SETTINGS uses between settings: change the value" >&2
          exit 1
          ;;
      esac
      settings="${settings:+$settings;}$name=$value"
    done
    extra="${INBOXQ_EXTRA_SETTINGS:-}"
    if [ -n "$extra" ]; then settings="${settings:+$settings;}$extra"; fi
    azd env set INBOXQ_APP_SETTINGS "$settings"
    if [ -n "$settings" ]; then
      echo "inboxq: app settings from the azd environment: $(printf '%s' "$settings" | tr ';' '\n' | sed 's/=.*//' | tr '\n' ' ')"
    fi
    ;;
  postdown)
    suffix=$(new_suffix)
    azd env set INBOXQ_VAULT_SUFFIX "$suffix"
    echo "inboxq: the next provision creates a new vault (name ending in -$suffix); the deleted one can be recovered for 90 days"
    ;;
  *)
    echo "usage: azd-hooks.sh preprovision|postdown" >&2
    exit 2
    ;;
esac
