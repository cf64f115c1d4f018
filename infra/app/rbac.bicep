// Least privilege between the pieces: the app's identity gets data-plane roles on exactly the
// storage account, vault and Application Insights component it uses.

param storageAccountName string
param keyVaultName string
param applicationInsightsName string

@description('Principal id of the Function App identity')
param appPrincipalId string

@description('Principal id of who deploys (azd sets it): a person, or the service principal of a pipeline; empty for none')
param deployerPrincipalId string = ''

@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
@description('What the deployer is (azd sets AZURE_PRINCIPAL_TYPE): a role assignment with the wrong type fails (UnmatchedPrincipalType)')
param deployerPrincipalType string = 'User'

@description('The credential modes in use (INBOXQ_CLIENT_CREDENTIAL, and any per-mailbox one): the deployer gets the vault role that mode\'s setup step needs, and no other')
param credentialModes string[] = []

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  keyVaultCertificatesOfficer: 'a4417e6f-fecd-4de8-b567-7b0420556985'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource storageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in [roles.storageBlobDataOwner, roles.storageQueueDataContributor, roles.storageTableDataContributor]: {
    scope: storage
    name: guid(storage.id, appPrincipalId, role)
    properties: {
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    }
  }
]

resource vaultReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, appPrincipalId, roles.keyVaultSecretsUser)
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}

// What the deployer puts in the vault, by credential mode: a client secret (`az keyvault secret
// set`) needs Secrets Officer; a certificate (`az keyvault certificate import/create/download`)
// needs Certificates Officer. The managed-identity mode puts nothing there, so the deployer gets no
// vault role at all.
var deployerVaultRoles = concat(
  contains(credentialModes, 'secret') ? [roles.keyVaultSecretsOfficer] : [],
  contains(credentialModes, 'certificate') ? [roles.keyVaultCertificatesOfficer] : []
)

resource deployerVaultRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in (empty(deployerPrincipalId) ? [] : deployerVaultRoles): {
    scope: vault
    name: guid(vault.id, deployerPrincipalId, role)
    properties: {
      principalId: deployerPrincipalId
      principalType: deployerPrincipalType
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    }
  }
]

resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: appInsights
  name: guid(appInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}
