// inboxq on Azure: `azd up` provisions this and deploys the Function App.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names of all resources derive from it')
param environmentName string

@minLength(1)
@description('Azure region for all resources (one with Flex Consumption)')
param location string

@description('Object id of the person deploying (azd sets it): may put the client secret in the vault')
param principalId string = ''

@description('The dedicated mailbox, e.g. agent@contoso.com (one mailbox; leave empty when mailboxes is set)')
param mailbox string = ''

@description('Several mailboxes: their keys, separated by commas (e.g. sales,support); each needs INBOXQ_<KEY>__MAILBOX in extraSettings')
param mailboxes string = ''

@description('More app settings, e.g. the per-mailbox INBOXQ_<KEY>__* settings of several mailboxes (docs/mailboxes.md)')
param extraSettings object = {}

@description('Application (client) id of the Entra app registration with IMAP.AccessAsApp and SMTP.SendAsApp')
param clientId string

@description('Entra tenant id of the mailbox; empty for the tenant you deploy in')
param tenantId string = ''

@allowed([
  'secret'
  'certificate'
  'managed-identity'
])
@description('How the app authenticates to Entra ID: a client secret or certificate in Key Vault, or the Function App\'s managed identity as a federated credential (no secret at all)')
param clientCredential string = 'managed-identity'

@description('Authorized senders: addresses and *@domain patterns, separated by commas')
param authorizedSenders string

@description('authserv-id of the trusted Authentication-Results header; empty for Microsoft 365')
param trustedAuthservId string = ''

@description('Accept X-MS-Exchange-Organization-AuthAs: Internal (mail from the same tenant)')
param microsoftInternalFallback bool = true

@description('NCRONTAB (six fields, UTC) for the drain')
param drainSchedule string = '0 */2 * * * *'

@minValue(0)
@description('Days stored mail is kept; 0 keeps it')
param mailRetentionDays int = 30

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var mailboxTenantId = empty(tenantId) ? tenant().tenantId : tenantId
var tags = {
  'azd-env-name': environmentName
  application: 'inboxq'
}
var mailContainer = 'inboxq-mail'
var mailboxKeys = filter(map(split(mailboxes, ','), key => toLower(trim(key))), key => !empty(key))
var inboxqSettings = {
  INBOXQ_TENANT_ID: mailboxTenantId
  INBOXQ_CLIENT_ID: clientId
  INBOXQ_CLIENT_CREDENTIAL: clientCredential
  INBOXQ_KEYVAULT_URL: vault.outputs.uri
  INBOXQ_AUTHORIZED_SENDERS: authorizedSenders
  INBOXQ_TRUSTED_AUTHSERV_ID: trustedAuthservId
  INBOXQ_MICROSOFT_INTERNAL_FALLBACK: string(microsoftInternalFallback)
  INBOXQ_DRAIN_SCHEDULE: drainSchedule
  INBOXQ_MAIL_RETENTION_DAYS: string(mailRetentionDays)
}
var deploymentContainer = 'app-package-${take(resourceToken, 7)}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module identity 'core/identity/user-assigned-identity.bicep' = {
  scope: rg
  params: {
    name: 'id-inboxq-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'core/monitor/monitoring.bicep' = {
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'core/storage/storage.bicep' = {
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    containers: [
      mailContainer
      deploymentContainer
    ]
    // With several mailboxes, each has its own tasks queue (tasks-<key>).
    queues: concat([
      'drain-requests'
      'tasks'
      'replies'
      'replies-poison'
    ], map(mailboxKeys, key => 'tasks-${key}'))
    tables: [
      'inboxqMessages'
      'inboxqReplies'
      'inboxqMailboxes'
      'inboxqConversations'
      'inboxqWorkerDone'
    ]
    retentionContainer: mailContainer
    retentionDays: mailRetentionDays
  }
}

module vault 'core/security/keyvault.bicep' = {
  scope: rg
  params: {
    name: 'kv-${take(resourceToken, 18)}'
    location: location
    tags: tags
  }
}

module app 'app/function.bicep' = {
  scope: rg
  params: {
    name: 'func-inboxq-${resourceToken}'
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainer: deploymentContainer
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    inboxqSettings: union(inboxqSettings, empty(mailboxKeys) ? { INBOXQ_MAILBOX: mailbox } : { INBOXQ_MAILBOXES: join(mailboxKeys, ',') }, extraSettings)
  }
}

module rbac 'app/rbac.bicep' = {
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    keyVaultName: vault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
    deployerPrincipalId: principalId
  }
}

module observability 'app/observability.bicep' = {
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    mailboxKeys: empty(mailboxKeys) ? [
      'default'
    ] : mailboxKeys
    location: location
    tags: tags
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = mailboxTenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AZURE_KEY_VAULT_NAME string = vault.outputs.name
output AZURE_KEY_VAULT_URI string = vault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_CONNECTION_STRING string = monitoring.outputs.connectionString
output INBOXQ_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output INBOXQ_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output INBOXQ_CLIENT_ID string = clientId
output INBOXQ_CLIENT_CREDENTIAL string = clientCredential
