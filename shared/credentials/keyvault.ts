/**
 * Reads the app registration's client secret from Azure Key Vault.
 *
 * The vault is reached with the Azure SDK's DefaultAzureCredential, which reads the SDK's own
 * settings, not inboxq's: in Azure the Function App's managed identity (AZURE_CLIENT_ID names a
 * user-assigned one); locally a developer's az login, or AZURE_TENANT_ID, AZURE_CLIENT_ID and
 * AZURE_CLIENT_SECRET with AZURE_AUTHORITY_HOST for its login (INBOXQ_AUTHORITY_HOST is for the
 * mailbox's token only). The secret is read on demand (latest version), never put in an app setting, and never
 * logged: only its name and version are.
 */
import { DefaultAzureCredential, type TokenCredential } from '@azure/identity';
import { SecretClient } from '@azure/keyvault-secrets';

import { KeyVaultError } from '../errors';

export interface VaultSecret {
  value: string;
  /** Version id, so a rotation can be noticed and logged without the value. */
  version: string;
}

export interface KeyVaultReadOptions {
  vaultUrl: string;
  secretName: string;
  mailbox: string;
  verifyChallengeResource: boolean;
  /** Microsoft's instance discovery for the vault login (INBOXQ_KEYVAULT_INSTANCE_DISCOVERY). */
  instanceDiscovery: boolean;
  tlsCa: Buffer | undefined;
  credential?: TokenCredential;
}

const clients = new Map<string, SecretClient>();

function secretClient(opts: KeyVaultReadOptions): SecretClient {
  const key = `${opts.vaultUrl}|${opts.verifyChallengeResource}|${opts.instanceDiscovery}`;
  let client = clients.get(key);
  if (!client) {
    const tlsOptions = opts.tlsCa ? { ca: opts.tlsCa } : undefined;
    const credential =
      opts.credential ??
      new DefaultAzureCredential({
        ...(tlsOptions ? { tlsOptions } : {}),
        // A private identity provider (the local stack, a disconnected cloud) is not in Microsoft's instance discovery.
        ...(opts.instanceDiscovery ? {} : { disableInstanceDiscovery: true }),
      });
    client = new SecretClient(opts.vaultUrl, credential, {
      disableChallengeResourceVerification: !opts.verifyChallengeResource,
      retryOptions: { maxRetries: 2, retryDelayInMs: 500 },
      ...(tlsOptions ? { tlsOptions } : {}),
    });
    clients.set(key, client);
  }
  return client;
}

export async function readVaultSecret(opts: KeyVaultReadOptions): Promise<VaultSecret> {
  try {
    const secret = await secretClient(opts).getSecret(opts.secretName);
    if (!secret.value) {
      throw new KeyVaultError(`Key Vault secret ${opts.secretName} in ${opts.vaultUrl} is empty`, {
        mailbox: opts.mailbox,
        hint: `set it: az keyvault secret set --vault-name <vault> --name ${opts.secretName} --value <client secret>`,
      });
    }
    return { value: secret.value, version: secret.properties.version ?? 'unknown' };
  } catch (err) {
    if (err instanceof KeyVaultError) throw err;
    throw describeVaultFailure(err, opts);
  }
}

function describeVaultFailure(err: unknown, opts: KeyVaultReadOptions): KeyVaultError {
  const e = err as { statusCode?: number; code?: string; name?: string; message?: string };
  const where = `Key Vault secret ${opts.secretName} in ${opts.vaultUrl}`;
  if (e.statusCode === 404 || e.code === 'SecretNotFound') {
    return new KeyVaultError(`${where} does not exist`, {
      mailbox: opts.mailbox,
      cause: err,
      hint: `create it: az keyvault secret set --vault-name <vault> --name ${opts.secretName} --value <client secret>, or correct INBOXQ_CLIENT_SECRET_NAME`,
    });
  }
  if (e.statusCode === 401 || e.statusCode === 403) {
    return new KeyVaultError(`${where} can't be read: access denied (HTTP ${e.statusCode})`, {
      mailbox: opts.mailbox,
      cause: err,
      hint: "grant the Function App's identity the role Key Vault Secrets User on the vault (the vault must use RBAC authorization)",
    });
  }
  if (
    e.name === 'CredentialUnavailableError' ||
    e.name === 'AuthenticationError' ||
    e.name === 'AggregateAuthenticationError'
  ) {
    return new KeyVaultError(`${where} can't be read: no credential for the vault (${e.name})`, {
      mailbox: opts.mailbox,
      cause: err,
      hint: 'in Azure, assign a managed identity and set AZURE_CLIENT_ID to its client id; locally, az login or set AZURE_TENANT_ID/AZURE_CLIENT_ID/AZURE_CLIENT_SECRET for a developer identity',
      retryable: e.name === 'AuthenticationError',
    });
  }
  return new KeyVaultError(
    `${where} can't be read: ${e.code ?? e.name ?? 'error'}${e.statusCode ? ` (HTTP ${e.statusCode})` : ''}`,
    {
      mailbox: opts.mailbox,
      cause: err,
      hint: 'check INBOXQ_KEYVAULT_URL and that the vault is reachable from the Function App; this run stops and the next one tries again',
      retryable: true,
    },
  );
}
