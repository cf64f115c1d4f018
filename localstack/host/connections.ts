/**
 * A binding's `connection` as the host resolves it: the app setting of that name holding a
 * connection string, or identity-based settings under `<name>__` (queueServiceUri or serviceUri or
 * accountName, with credential=managedidentity and clientId), as Azure uses for AzureWebJobsStorage.
 */
import { DefaultAzureCredential, ManagedIdentityCredential, type TokenCredential } from '@azure/identity';
import { QueueServiceClient } from '@azure/storage-queue';

import { type AppSettings, HostStartError } from './settings';

export function connectionProblem(connection: string, settings: AppSettings): string | undefined {
  const set = (name: string) => Boolean(settings[name]);
  if (set(connection)) return undefined;
  if (['queueServiceUri', 'serviceUri', 'accountName'].some((k) => set(`${connection}__${k}`))) return undefined;
  return `Storage account connection string '${connection}' does not exist. Make sure that it is a defined App Setting.`;
}

export function queueServiceFor(connection: string, settings: AppSettings): QueueServiceClient {
  const problem = connectionProblem(connection, settings);
  if (problem) throw new HostStartError([problem]);
  const connectionString = settings[connection];
  if (connectionString) return QueueServiceClient.fromConnectionString(connectionString);
  const account = settings[`${connection}__accountName`];
  const uri =
    settings[`${connection}__queueServiceUri`] ??
    settings[`${connection}__serviceUri`] ??
    `https://${account}.queue.core.windows.net`;
  const clientId = settings[`${connection}__clientId`];
  const credential: TokenCredential =
    settings[`${connection}__credential`]?.toLowerCase() === 'managedidentity'
      ? new ManagedIdentityCredential(clientId ? { clientId } : {})
      : new DefaultAzureCredential(clientId ? { managedIdentityClientId: clientId } : {});
  return new QueueServiceClient(uri, credential);
}
