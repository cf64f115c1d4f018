/**
 * Azure Storage clients from the same connection the Functions host uses (AzureWebJobsStorage):
 * a connection string locally (Azurite), identity-based service URIs in Azure.
 *
 * Tables, queues and containers are created on first use and remembered per process, so a new
 * deployment or a fresh Azurite needs no setup step.
 */
import { TableClient, TableServiceClient } from '@azure/data-tables';
import { DefaultAzureCredential } from '@azure/identity';
import { BlobServiceClient, type ContainerClient } from '@azure/storage-blob';
import { type QueueClient, QueueServiceClient } from '@azure/storage-queue';

import type { StorageConnection } from '../config/types';
import { StorageError } from '../errors';

export interface StorageInventory {
  missing: string[];
}

/**
 * Which of the named queues, tables and containers do not exist, without creating any (what a
 * deployment should have made). Throws a StorageError when the account can't be reached.
 */
export async function findMissingResources(
  connection: StorageConnection,
  wanted: { queues: string[]; tables: string[]; containers: string[] },
  mailbox?: string,
): Promise<StorageInventory> {
  const { queueService, blobService, tableService } = serviceClients(connection);
  const missing: string[] = [];
  try {
    for (const q of wanted.queues) {
      if (!(await queueService.getQueueClient(q).exists())) missing.push(`queue ${q}`);
    }
    for (const c of wanted.containers) {
      if (!(await blobService.getContainerClient(c).exists())) missing.push(`container ${c}`);
    }
    const existing = new Set<string>();
    for await (const t of tableService.listTables()) if (t.name) existing.add(t.name.toLowerCase());
    for (const t of wanted.tables) if (!existing.has(t.toLowerCase())) missing.push(`table ${t}`);
  } catch (err) {
    throw storageError('Checking the storage account failed', err, mailbox);
  }
  return { missing };
}

export interface StorageClients {
  table(name: string): Promise<TableClient>;
  queue(name: string): Promise<QueueClient>;
  container(name: string): Promise<ContainerClient>;
  /** A short name for messages: the account's endpoint without credentials. */
  describe(): string;
}

function accountFromConnectionString(cs: string): string {
  if (/UseDevelopmentStorage=true/i.test(cs)) return 'devstoreaccount1 (Azurite)';
  return /AccountName=([^;]+)/i.exec(cs)?.[1] ?? 'storage account';
}

/**
 * Bounded retries: a Storage outage fails the operation within about ten seconds, the run stops with
 * nothing removed from the inbox, and the next run tries again. (The SDK defaults back off for
 * minutes, longer than a run's budget.)
 */
const QUEUE_BLOB_RETRY = { maxTries: 4, retryDelayInMs: 500, maxRetryDelayInMs: 4000, tryTimeoutInMs: 120_000 };
const TABLE_RETRY = { maxRetries: 3, retryDelayInMs: 500, maxRetryDelayInMs: 4000 };

/** The service clients for a connection: a connection string (Azurite) or service URIs with a managed identity. */
function serviceClients(connection: StorageConnection) {
  const credential =
    connection.kind === 'identity'
      ? new DefaultAzureCredential({ managedIdentityClientId: connection.clientId })
      : undefined;
  if (connection.kind === 'connection-string') {
    const cs = connection.connectionString;
    return {
      queueService: QueueServiceClient.fromConnectionString(cs, { retryOptions: QUEUE_BLOB_RETRY }),
      blobService: BlobServiceClient.fromConnectionString(cs, { retryOptions: QUEUE_BLOB_RETRY }),
      tableService: TableServiceClient.fromConnectionString(cs, {
        allowInsecureConnection: true,
        retryOptions: TABLE_RETRY,
      }),
      table: (name: string) =>
        TableClient.fromConnectionString(cs, name, { allowInsecureConnection: true, retryOptions: TABLE_RETRY }),
    };
  }
  return {
    queueService: new QueueServiceClient(connection.queueServiceUri, credential, { retryOptions: QUEUE_BLOB_RETRY }),
    blobService: new BlobServiceClient(connection.blobServiceUri, credential, { retryOptions: QUEUE_BLOB_RETRY }),
    tableService: new TableServiceClient(connection.tableServiceUri, credential!, { retryOptions: TABLE_RETRY }),
    table: (name: string) =>
      new TableClient(connection.tableServiceUri, name, credential!, { retryOptions: TABLE_RETRY }),
  };
}

/**
 * Clients of one storage account. The app creates each table, queue and container on first use;
 * `readOnly` (the CLI's trace and status) creates nothing: a missing one reads as empty.
 * `createIfAllowed` (a worker of one mailbox, whose identity has roles on its own queues, container
 * and table only, which the deployment made): a create refused with 403 is not an error; the
 * resource's own requests then say whether it may be used.
 */
export function createStorageClients(
  connection: StorageConnection,
  mailbox?: string,
  options: { readOnly?: boolean; createIfAllowed?: boolean } = {},
): StorageClients {
  const ready = new Map<string, Promise<unknown>>();
  const { queueService, blobService, table: tableClient } = serviceClients(connection);
  const name =
    connection.kind === 'connection-string'
      ? accountFromConnectionString(connection.connectionString)
      : new URL(connection.queueServiceUri).host;

  const make = async (request: () => Promise<unknown>) => {
    if (options.readOnly) return;
    try {
      await request();
    } catch (err) {
      if (!(options.createIfAllowed && (err as { statusCode?: number }).statusCode === 403)) throw err;
    }
  };

  function once<T>(key: string, create: () => Promise<T>): Promise<T> {
    let p = ready.get(key) as Promise<T> | undefined;
    if (!p) {
      p = create().catch((err) => {
        ready.delete(key);
        throw storageError(`Can't prepare ${key} in ${name}`, err, mailbox);
      });
      ready.set(key, p);
    }
    return p;
  }

  return {
    describe: () => name,
    table: (table) =>
      once(`table ${table}`, async () => {
        const client = tableClient(table);
        await make(() => client.createTable());
        return client;
      }),
    queue: (queue) =>
      once(`queue ${queue}`, async () => {
        const client = queueService.getQueueClient(queue);
        await make(() => client.createIfNotExists());
        return client;
      }),
    container: (container) =>
      once(`container ${container}`, async () => {
        const client = blobService.getContainerClient(container);
        await make(() => client.createIfNotExists());
        return client;
      }),
  };
}

/** Wraps a Storage SDK error: names the operation, the HTTP status and code, never the request. */
export function storageError(what: string, err: unknown, mailbox?: string): StorageError {
  if (err instanceof StorageError) return err;
  const e = err as {
    statusCode?: number;
    code?: string;
    details?: { odataError?: { code?: string }; errorCode?: string };
    message?: string;
  };
  const code = e.details?.odataError?.code ?? e.details?.errorCode ?? e.code ?? (err as Error)?.name ?? 'error';
  const status = e.statusCode ? ` (HTTP ${e.statusCode})` : '';
  const denied = e.statusCode === 403;
  return new StorageError(`${what}: ${code}${status}`, {
    mailbox,
    cause: err,
    status: e.statusCode,
    retryable: !denied,
    hint: denied
      ? "grant the Function App's identity Storage Queue/Table Data Contributor and Storage Blob Data Owner on the account"
      : 'nothing was removed from the inbox; the next run tries again. Check that the storage account (AzureWebJobsStorage) is reachable',
  });
}

/** The Table Storage error code (`EntityAlreadyExists`, `UpdateConditionNotSatisfied`, ...). */
export function tableErrorCode(err: unknown): string | undefined {
  const e = err as { statusCode?: number; code?: string; details?: { odataError?: { code?: string } } };
  return e?.details?.odataError?.code ?? e?.code;
}
