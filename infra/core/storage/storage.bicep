@description('Storage account name (3-24 lower-case letters and digits)')
param name string
param location string = resourceGroup().location
param tags object = {}

@description('Blob containers to create')
param containers string[] = []

@description('Queues to create')
param queues string[] = []

@description('Tables to create')
param tables string[] = []

@description('Blobs in these containers are deleted retentionDays after their last change')
param retentionContainers string[] = []
param retentionDays int = 30

@description('Days a deleted or overwritten blob (and a deleted container) can still be restored; 0 turns soft delete off')
param softDeleteDays int = 7

@description('Reached only through private endpoints: the public endpoint is closed')
param privateOnly bool = false

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    // Identity-based access only: no account key, no SAS, no public blobs.
    allowSharedKeyAccess: false
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
    publicNetworkAccess: privateOnly ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: privateOnly ? 'None' : 'AzureServices'
      defaultAction: privateOnly ? 'Deny' : 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    // A mail's source deleted by mistake (or by a bad deployment) can be restored for a while.
    deleteRetentionPolicy: {
      enabled: softDeleteDays > 0
      days: softDeleteDays > 0 ? softDeleteDays : null
    }
    containerDeleteRetentionPolicy: {
      enabled: softDeleteDays > 0
      days: softDeleteDays > 0 ? softDeleteDays : null
    }
  }
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for container in containers: {
    parent: blobService
    name: container
    properties: {
      publicAccess: 'None'
    }
  }
]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource storageQueues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [
  for queue in queues: {
    parent: queueService
    name: queue
  }
]

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource storageTables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [
  for table in tables: {
    parent: tableService
    name: table
  }
]

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (!empty(retentionContainers) && retentionDays > 0) {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      // One rule per container (a rule takes at most 10 prefixes); the first keeps its name.
      rules: [
        for (container, i) in retentionContainers: {
          name: i == 0 ? 'mail-retention' : 'mail-retention-${container}'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${container}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: retentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    blobContainers
  ]
}

output id string = storage.id
output name string = storage.name
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
