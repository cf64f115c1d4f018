// inboxq on Azure: `azd up` provisions this and deploys the Function App.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; names of all resources derive from it')
param environmentName string

// The regions that offer Flex Consumption, as Microsoft's Flex Consumption quickstarts list them
// (`az functionapp list-flexconsumption-locations` gives today's list): any other fails only when
// the plan is created, after most resources exist. azd offers exactly these.
@minLength(1)
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({
  azd: {
    type: 'location'
  }
})
@description('Azure region for all resources (one with Flex Consumption)')
param location string

@description('Object id of who deploys (azd sets it): gets the vault role the credential mode\'s setup needs')
param principalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('What principalId is (azd sets AZURE_PRINCIPAL_TYPE): ServicePrincipal when a pipeline deploys')
param principalType string = 'User'

@maxLength(8)
@description('Makes the vault\'s name this deployment\'s own (the azd hooks set it; docs/deployment.md): a vault deleted by `azd down` keeps its name for 90 days')
param vaultSuffix string = ''

@description('The dedicated mailbox, e.g. agent@contoso.com (one mailbox; leave empty when mailboxes is set)')
param mailbox string = ''

@description('Several mailboxes: their keys, separated by commas (e.g. sales,support); each needs INBOXQ_<KEY>__MAILBOX in appSettings')
param mailboxes string = ''

@description('A worker identity per mailbox, as key=principalId pairs separated by commas (e.g. sales=<object id>,support=<object id>; `default` with one mailbox): each gets roles on its mailbox\'s tasks and replies queues, container and worker table only (docs/mailboxes.md)')
param workerPrincipals string = ''

@description('More INBOXQ_* app settings, as NAME=value pairs separated by semicolons: the per-mailbox INBOXQ_<KEY>__* settings of several mailboxes. The azd hook builds it from the INBOXQ_<KEY>__* values of the azd environment (docs/deployment.md)')
param appSettings string = ''

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
param drainSchedule string = '*/5 * * * * *'

@minValue(0)
@description('Days stored mail is kept; 0 keeps it')
param mailRetentionDays int = 30

@allowed([
  512
  2048
  4096
])
@description('Memory of each Flex Consumption instance (MB), what every billed second is priced by: 512 holds every workload measured with room to spare (docs/operations.md, The instance size)')
param instanceMemoryMB int = 512

@description('Private networking: the app integrated in a virtual network, Storage and Key Vault reached through private endpoints only, mail out through a NAT gateway with one fixed IP')
param vnetEnabled bool = false

@description('Addresses (separated by commas) the alerts e-mail, through an action group created here')
param alertEmails string = ''

@description('Resource id of an existing action group the alerts notify as well')
param alertActionGroupId string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var mailboxTenantId = empty(tenantId) ? tenant().tenantId : tenantId
var tags = {
  'azd-env-name': environmentName
  application: 'inboxq'
}
var storageAccountName = 'st${resourceToken}'
var mailContainer = 'inboxq-mail'
var mailboxKeys = filter(map(split(mailboxes, ','), key => toLower(trim(key))), key => !empty(key))
// What belongs to each mailbox (shared/contract/messages.ts, mailboxResources): with one mailbox,
// today's names; with several, each its own queues, container and worker table, so a worker's roles
// can be scoped to its mailbox.
var mailboxResources = empty(mailboxKeys) ? [
  {
    key: 'default'
    tasksQueue: 'tasks'
    repliesQueue: 'replies'
    container: mailContainer
    doneTable: 'inboxqWorkerDone'
  }
] : map(mailboxKeys, key => {
  key: key
  tasksQueue: 'tasks-${key}'
  repliesQueue: 'replies-${key}'
  container: '${mailContainer}-${key}'
  doneTable: 'inboxqWorkerDone${key}'
})
// workerPrincipals, `key=principalId,key=principalId`: the worker identity of each mailbox.
var workerPrincipalList = map(
  filter(split(workerPrincipals, ','), entry => contains(entry, '=') && !empty(trim(substring(entry, indexOf(entry, '=') + 1)))),
  entry => {
    key: toLower(trim(substring(entry, 0, indexOf(entry, '='))))
    principalId: trim(substring(entry, indexOf(entry, '=') + 1))
  }
)
// appSettings, `NAME=value;NAME=value`, as an object (a value may hold `=`, not `;`).
var extraSettings = toObject(
  filter(split(appSettings, ';'), pair => contains(pair, '=') && !empty(trim(substring(pair, 0, indexOf(pair, '='))))),
  pair => trim(substring(pair, 0, indexOf(pair, '='))),
  pair => substring(pair, indexOf(pair, '=') + 1)
)
// Every credential mode in use, the deployment's and any mailbox's own: each decides a vault role.
var credentialModes = union(
  [clientCredential],
  map(filter(items(extraSettings), setting => endsWith(setting.key, '__CLIENT_CREDENTIAL')), setting => setting.value)
)
// A vault made before vaultSuffix existed keeps its name, and its retention, which can't change.
var vaultName = empty(vaultSuffix) ? 'kv-${take(resourceToken, 18)}' : 'kv-${take(resourceToken, 13)}-${vaultSuffix}'
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
    name: storageAccountName
    location: location
    tags: tags
    // With several mailboxes, each has its own tasks and replies queues, container and worker table.
    // The shared ones stay: `replies` is read while a deployment moves over (docs/mailboxes.md).
    containers: union([
      mailContainer
      deploymentContainer
    ], map(mailboxResources, m => m.container))
    queues: union([
      'drain-requests'
      'tasks'
      'replies'
      'replies-poison'
    ], flatten(map(mailboxResources, m => [
      m.tasksQueue
      m.repliesQueue
      '${m.repliesQueue}-poison'
    ])))
    tables: union([
      'inboxqMessages'
      'inboxqReplies'
      'inboxqMailboxes'
      'inboxqConversations'
      'inboxqWorkerDone'
      // The task id key: the app's alone (no worker role on it).
      'inboxqKeys'
    ], map(mailboxResources, m => m.doneTable))
    retentionContainers: union([
      mailContainer
    ], map(mailboxResources, m => m.container))
    retentionDays: mailRetentionDays
    privateOnly: vnetEnabled
  }
}

module vault 'core/security/keyvault.bicep' = {
  scope: rg
  params: {
    name: vaultName
    location: location
    tags: tags
    softDeleteDays: empty(vaultSuffix) ? 7 : 90
    privateOnly: vnetEnabled
  }
}

module network 'core/network/network.bicep' = if (vnetEnabled) {
  scope: rg
  params: {
    name: 'vnet-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    keyVaultName: vault.outputs.name
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
    virtualNetworkSubnetId: vnetEnabled ? network!.outputs.appSubnetId : ''
    instanceMemoryMB: instanceMemoryMB
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
    deployerPrincipalType: principalType
    credentialModes: credentialModes
  }
}

// A mailbox's worker identity gets roles on that mailbox's queues, container and table only.
module workerRoles 'app/worker-roles.bicep' = [
  for worker in workerPrincipalList: if (contains(map(mailboxResources, m => m.key), worker.key)) {
    scope: rg
    name: 'worker-roles-${worker.key}'
    // The account's name as a value known before deployment, so each assignment's scope (the
    // queue, container or table) can be checked on the evaluated template (scripts/deploy-check.ts).
    dependsOn: [
      storage
    ]
    params: {
      storageAccountName: storageAccountName
      principalId: worker.principalId
      tasksQueue: filter(mailboxResources, m => m.key == worker.key)[0].tasksQueue
      repliesQueue: filter(mailboxResources, m => m.key == worker.key)[0].repliesQueue
      container: filter(mailboxResources, m => m.key == worker.key)[0].container
      doneTable: filter(mailboxResources, m => m.key == worker.key)[0].doneTable
    }
  }
]

module observability 'app/observability.bicep' = {
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    mailboxKeys: empty(mailboxKeys) ? [
      'default'
    ] : mailboxKeys
    actionGroupId: alertActionGroupId
    alertEmails: alertEmails
    location: location
    tags: tags
  }
}

output AZURE_LOCATION string = location
// The deployment's tenant (azd's own AZURE_TENANT_ID): the managed identity's tokens come from it,
// so it is the issuer of the federated credential. The mailbox's tenant may be another one.
output AZURE_TENANT_ID string = tenant().tenantId
output INBOXQ_TENANT_ID string = mailboxTenantId
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
output INBOXQ_OUTBOUND_IP string = vnetEnabled ? network!.outputs.outboundIpAddress : ''
