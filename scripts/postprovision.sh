#!/bin/sh
# After `azd provision`: what is left to do in Microsoft 365 and Entra ID, with this deployment's
# values filled in (docs/m365-setup.md explains each step, docs/deployment.md the deployment).
# AZURE_TENANT_ID is the deployment's tenant (the managed identity's); INBOXQ_TENANT_ID the mailbox's.
set -eu
deployment_tenant="${AZURE_TENANT_ID:-}"
mailbox_tenant="${INBOXQ_TENANT_ID:-$deployment_tenant}"
mode="${INBOXQ_CLIENT_CREDENTIAL:-managed-identity}"
cat <<TEXT

inboxq is provisioned. Left to do (once), as a tenant admin (docs/m365-setup.md, step by step):

  API permissions of the app registration ${INBOXQ_CLIENT_ID}: App registrations → API permissions →
  Add a permission → APIs my organization uses → "Office 365 Exchange Online" (not Microsoft Graph) →
  Application permissions → IMAP.AccessAsApp and SMTP.SendAsApp; then grant admin consent:
    az ad app permission admin-consent --id ${INBOXQ_CLIENT_ID}
TEXT
if [ -n "$deployment_tenant" ] && [ "$mailbox_tenant" != "$deployment_tenant" ]; then
  cat <<TEXT

  The mailbox is in another tenant (${mailbox_tenant}). The app registration lives in this one
  (${deployment_tenant}) and must be multitenant ("Accounts in any organizational directory"); an
  admin of the mailbox's tenant consents to it there, which creates its service principal:
    https://login.microsoftonline.com/${mailbox_tenant}/adminconsent?client_id=${INBOXQ_CLIENT_ID}
  The Exchange Online steps below are done in the mailbox's tenant.
TEXT
fi
cat <<TEXT

  Credential (${mode}):
TEXT
case "$mode" in
  managed-identity)
    # The issuer is the tenant that issues the managed identity's tokens: the deployment's.
    cat <<TEXT
    az ad app federated-credential create --id ${INBOXQ_CLIENT_ID} --parameters '{"name":"inboxq-${AZURE_ENV_NAME:-env}","issuer":"https://login.microsoftonline.com/${AZURE_TENANT_ID}/v2.0","subject":"${INBOXQ_IDENTITY_PRINCIPAL_ID}","audiences":["api://AzureADTokenExchange"]}'
TEXT
    ;;
  secret)
    cat <<TEXT
    az keyvault secret set --vault-name ${AZURE_KEY_VAULT_NAME} --name inboxq-client-secret --value '<the client secret value>'
TEXT
    ;;
  certificate)
    cat <<TEXT
    A certificate made in the vault (its private key never leaves it), stored as PEM (what inboxq
    reads), then its public part given to the app registration:
    az keyvault certificate get-default-policy | sed -e 's#application/x-pkcs12#application/x-pem-file#' -e 's#CN=CLIGetDefaultPolicy#CN=inboxq#' > inboxq-policy.json
    az keyvault certificate create --vault-name ${AZURE_KEY_VAULT_NAME} --name inboxq-client-certificate --policy @inboxq-policy.json
    az keyvault certificate download --vault-name ${AZURE_KEY_VAULT_NAME} --name inboxq-client-certificate --file inboxq.crt --encoding PEM
    az ad app credential reset --id ${INBOXQ_CLIENT_ID} --cert @inboxq.crt --append
    (or one of your own, key and certificate in one PEM file: az keyvault certificate import
    --vault-name ${AZURE_KEY_VAULT_NAME} --name inboxq-client-certificate --file inboxq.pem --policy @inboxq-policy.json)
TEXT
    ;;
esac
if [ "${INBOXQ_VNET_ENABLED:-false}" = "true" ] && [ "$mode" != "managed-identity" ]; then
  cat <<TEXT
    The vault is reachable only from the virtual network: run the command above from a machine in
    it, or open the vault to your address for the minute it takes (docs/deployment.md, Private networking).
TEXT
fi
if [ -n "${INBOXQ_OUTBOUND_IP:-}" ]; then
  cat <<TEXT

  Outbound IP of the app (IMAP and SMTP to Exchange Online come from it): ${INBOXQ_OUTBOUND_IP}
TEXT
fi
cat <<TEXT

  Exchange Online (PowerShell, Connect-ExchangeOnline), for each mailbox:
    New-ServicePrincipal -AppId ${INBOXQ_CLIENT_ID} -ObjectId <object id of the Enterprise application>
    Add-MailboxPermission -Identity <mailbox> -User <that object id> -AccessRights FullAccess
    Set-CASMailbox -Identity <mailbox> -ImapEnabled \$true -SmtpClientAuthenticationDisabled \$false
    (per mailbox: the tenant's SMTP AUTH setting can stay off)

  Then check everything from here:
    npx inboxq doctor   (with the app settings of ${AZURE_FUNCTION_APP_NAME} in local.settings.json)

TEXT
