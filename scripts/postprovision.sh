#!/bin/sh
# After `azd provision`: what is left to do in Microsoft 365 and Entra ID, with this deployment's
# values filled in (docs/m365-setup.md explains each step).
set -eu
cat <<TEXT

inboxq is provisioned. Left to do (once), as a tenant admin:

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
TEXT
    ;;
esac
cat <<TEXT

  Exchange Online (PowerShell, Connect-ExchangeOnline), for each mailbox:
    New-ServicePrincipal -AppId ${INBOXQ_CLIENT_ID} -ObjectId <object id of the Enterprise application>
    Add-MailboxPermission -Identity <mailbox> -User <that object id> -AccessRights FullAccess
    Set-CASMailbox -Identity <mailbox> -SmtpClientAuthenticationDisabled \$false

  Then check everything from here:
    npx inboxq doctor   (with the app settings of ${AZURE_FUNCTION_APP_NAME} in local.settings.json)

TEXT
