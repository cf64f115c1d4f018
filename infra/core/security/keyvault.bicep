param name string
param location string = resourceGroup().location
param tags object = {}

@description('Days a deleted vault or secret can be recovered (7-90); fixed once the vault exists')
@minValue(7)
@maxValue(90)
param softDeleteDays int = 90

@description('Reached only through a private endpoint: the public endpoint is closed')
param privateOnly bool = false

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    // Access by Azure roles only (Key Vault Secrets User for the app), no access policies.
    enableRbacAuthorization: true
    enableSoftDelete: true
    // With purge protection a deleted vault can't be purged before this, so main.bicep gives each
    // vault a name of its own (vaultSuffix) and a provision after `azd down` never meets the deleted one.
    softDeleteRetentionInDays: softDeleteDays
    enablePurgeProtection: true
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: privateOnly ? 'None' : 'AzureServices'
      defaultAction: privateOnly ? 'Deny' : 'Allow'
    }
  }
}

output id string = vault.id
output name string = vault.name
output uri string = vault.properties.vaultUri
