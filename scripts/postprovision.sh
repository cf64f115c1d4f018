#!/bin/sh
# After `azd provision`: what is left to do in Microsoft 365 and Entra ID, with this deployment's
# values filled in (docs/m365-setup.md explains each step).
set -eu
cat <<TEXT

inboxq is provisioned. Left to do (once), as a tenant admin (docs/m365-setup.md, step by step):

  API permissions of the app registration ${INBOXQ_CLIENT_ID}: App registrations → API permissions →
  Add a permission → APIs my organization uses → "Office 365 Exchange Online" (not Microsoft Graph) →
  Application permissions → IMAP.AccessAsApp and SMTP.SendAsApp; then grant admin consent:
    az ad app permission admin-consent --id ${INBOXQ_CLIENT_ID}

  Credential (${INBOXQ_CLIENT_CREDENTIAL:-managed-identity}):
TEXT
case "${INBOXQ_CLIENT_CREDENTIAL:-managed-identity}" in
  managed-identity)
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
    az keyvault certificate import --vault-name ${AZURE_KEY_VAULT_NAME} --name inboxq-client-certificate --file inboxq.pem
    and upload its public part to the app registration (Entra ID only ever sees the public key):
    az ad app credential reset --id ${INBOXQ_CLIENT_ID} --cert @inboxq.crt --append
TEXT
    ;;
esac
cat <<TEXT

  Exchange Online (PowerShell, Connect-ExchangeOnline), for each mailbox:
    New-ServicePrincipal -AppId ${INBOXQ_CLIENT_ID} -ObjectId <object id of the Enterprise application>
    Add-MailboxPermission -Identity <mailbox> -User <that object id> -AccessRights FullAccess
    Set-CASMailbox -Identity <mailbox> -ImapEnabled \$true -SmtpClientAuthenticationDisabled \$false
    (per mailbox: the tenant's SMTP AUTH setting can stay off)

  Then check everything from here:
    npx inboxq doctor   (with the app settings of ${AZURE_FUNCTION_APP_NAME} in local.settings.json)

TEXT
