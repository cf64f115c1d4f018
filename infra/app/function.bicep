// The Function App on the Flex Consumption plan (Linux, Node.js 22), running as a user-assigned
// managed identity, with identity-based connections to Storage and Application Insights.

param name string
param planName string
param location string = resourceGroup().location
param tags object = {}

@description('Resource id of the user-assigned identity the app runs as')
param identityId string
@description('Client id of that identity')
param identityClientId string

param storageAccountName string
param deploymentContainer string
param applicationInsightsConnectionString string

@description('inboxq settings (INBOXQ_*)')
param inboxqSettings object

@description('Subnet the app is integrated in (private networking); empty for none')
param virtualNetworkSubnetId string = ''

param maximumInstanceCount int = 40
@allowed([
  512
  2048
  4096
])
@description('Memory of each instance (MB); a billed second costs in proportion')
param instanceMemoryMB int

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

var platformSettings = {
  // Identity-based AzureWebJobsStorage: no key, no connection string.
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  // The Azure SDK's own setting: DefaultAzureCredential reads Key Vault as this identity.
  AZURE_CLIENT_ID: identityClientId
  // inboxq's: the identity whose token is the federated credential of the app registration (managed-identity mode).
  INBOXQ_MANAGED_IDENTITY_CLIENT_ID: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'inboxq' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identityId
    // Integrated in the network: storage and the vault through their private endpoints, mail
    // through the NAT gateway (all outbound traffic of a Flex Consumption app takes the subnet).
    virtualNetworkSubnetId: empty(virtualNetworkSubnetId) ? null : virtualNetworkSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'node'
        version: '22'
      }
    }
  }

  resource appSettings 'config' = {
    name: 'appsettings'
    properties: union(platformSettings, inboxqSettings)
  }
}

output name string = site.name
output id string = site.id
output defaultHostName string = site.properties.defaultHostName
