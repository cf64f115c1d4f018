// One mailbox's worker: the roles it needs on that mailbox's own queues, container and table, and
// nothing else of the account (docs/mailboxes.md, A worker per mailbox). Azure RBAC then keeps it
// from reading another mailbox's tasks or mail, answering on another mailbox's queue, or attaching
// another mailbox's blobs; the reply function checks the rest (the mailbox a reply names, where its
// attachments come from).

param storageAccountName string

@description('Principal id of the worker identity (a managed identity, or an app registration\'s service principal)')
param principalId string

param tasksQueue string
param repliesQueue string
param container string
param doneTable string

var roles = {
  // peek, receive and delete messages: take tasks
  queueDataMessageProcessor: '8a0f0c08-91a1-4084-bc3d-661d67233fed'
  // put messages: give replies
  queueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  // read the task's blobs, write reply attachments
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  // TaskWorker's record of completed tasks
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource tasks 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: tasksQueue
}

resource replies 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: repliesQueue
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource mail 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: container
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource done 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: doneTable
}

resource takeTasks 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: tasks
  name: guid(tasks.id, principalId, roles.queueDataMessageProcessor)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataMessageProcessor)
  }
}

resource giveReplies 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: replies
  name: guid(replies.id, principalId, roles.queueDataMessageSender)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.queueDataMessageSender)
  }
}

resource useMail 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: mail
  name: guid(mail.id, principalId, roles.blobDataContributor)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
  }
}

resource recordDone 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: done
  name: guid(done.id, principalId, roles.tableDataContributor)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.tableDataContributor)
  }
}
