/**
 * One mailbox's config from the app settings: its own `INBOXQ_<KEY>__*` overrides over the shared
 * INBOXQ_* settings, validated against the schema, then the checks that need several settings
 * together (which credential, which Storage connection, folders that must not be INBOX).
 */
import { readFileSync } from 'node:fs';

import { mailboxResources } from '../contract/messages';
import { ConfigError } from '../errors';
import {
  ACKNOWLEDGEMENT_PLACEHOLDERS,
  DEPLOYMENT_SETTINGS,
  mailboxSettingName,
  type MailboxSettings,
  parseSenderList,
  schemaFor,
} from './schema';
import type { ClientCredentialSource, Env, InboxqConfig, StorageConnection } from './types';

/** One mailbox's config: `key` null for a single-mailbox deployment (plain INBOXQ_* settings). */
export function loadMailbox(env: Env, key: string, overrideKey: string | null): InboxqConfig {
  const { s, nameOf } = readSettings(env, overrideKey);
  const problems: string[] = [];
  const credential = credentialOf(s, nameOf, problems);
  const senders = authorizedSenders(s, nameOf, problems);
  const storage = storageOf(s, problems);
  const tlsCa = tlsCaOf(s, problems);
  checkTogether(s, nameOf, problems);
  if (problems.length > 0 || !credential || !storage) throw new ConfigError(problems, { mailbox: s.INBOXQ_MAILBOX });

  const resources = mailboxResources(overrideKey);
  return {
    key,
    mailbox: s.INBOXQ_MAILBOX,
    tasksQueue: s.INBOXQ_TASKS_QUEUE ?? resources.tasksQueue,
    repliesQueue: resources.repliesQueue,
    mailContainer: resources.container,
    senderPolicy: {
      authorizedSenders: senders,
      trustedAuthservId: s.INBOXQ_TRUSTED_AUTHSERV_ID,
      microsoftInternalFallback: s.INBOXQ_MICROSOFT_INTERNAL_FALLBACK,
    },
    identity: {
      tenantId: s.INBOXQ_TENANT_ID,
      clientId: s.INBOXQ_CLIENT_ID.toLowerCase(),
      authorityHost: s.INBOXQ_AUTHORITY_HOST,
      exchangeResource: s.INBOXQ_EXCHANGE_RESOURCE,
      credential,
    },
    keyVault: {
      verifyChallengeResource: s.INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE,
      instanceDiscovery: s.INBOXQ_KEYVAULT_INSTANCE_DISCOVERY,
    },
    imap: {
      host: s.INBOXQ_IMAP_HOST,
      port: s.INBOXQ_IMAP_PORT,
      secure: s.INBOXQ_IMAP_SECURE,
      keepWarmMs: s.INBOXQ_IMAP_KEEP_WARM_SECONDS * 1000,
    },
    smtp: { host: s.INBOXQ_SMTP_HOST, port: s.INBOXQ_SMTP_PORT },
    tlsCa,
    drain: {
      processedAction: s.INBOXQ_PROCESSED_ACTION,
      processedFolder: s.INBOXQ_PROCESSED_FOLDER,
      quarantineFolder: s.INBOXQ_QUARANTINE_FOLDER,
      maxMessagesPerRun: s.INBOXQ_MAX_MESSAGES_PER_RUN,
      runBudgetMs: s.INBOXQ_RUN_BUDGET_SECONDS * 1000,
      leaseMs: s.INBOXQ_DRAIN_LEASE_SECONDS * 1000,
      retentionDays: s.INBOXQ_MAIL_RETENTION_DAYS,
      mailboxRetentionDays: s.INBOXQ_MAILBOX_RETENTION_DAYS,
    },
    reply: {
      maxPerMinute: s.INBOXQ_SMTP_MAX_PER_MINUTE,
      failureNotice: s.INBOXQ_FAILURE_NOTICE,
      leaseMs: s.INBOXQ_REPLY_LEASE_SECONDS * 1000,
    },
    acknowledgement: { enabled: s.INBOXQ_ACKNOWLEDGE, text: s.INBOXQ_ACKNOWLEDGEMENT_TEXT },
    storage,
  };
}

type NameOf = (setting: string) => string;

/**
 * The mailbox's settings, validated against the schema: its own override where one is set, else
 * the shared setting. `nameOf` names the app setting a value came from, for messages.
 */
function readSettings(env: Env, overrideKey: string | null): { s: MailboxSettings; nameOf: NameOf } {
  const perMailbox = (setting: string) =>
    overrideKey !== null && setting.startsWith('INBOXQ_') && !DEPLOYMENT_SETTINGS.has(setting);
  const nameOf = (setting: string): string => {
    if (!perMailbox(setting)) return setting;
    const own = mailboxSettingName(overrideKey!, setting);
    // With several mailboxes, each names its address itself: a shared INBOXQ_MAILBOX would make them one inbox.
    return env[own] !== undefined || setting === 'INBOXQ_MAILBOX' ? own : setting;
  };
  const schema = schemaFor(nameOf);

  // Empty strings count as unset, the way the portal and local.settings.json present them.
  const present: Record<string, string> = {};
  for (const setting of Object.keys(schema.shape)) {
    const name = nameOf(setting);
    const value = env[name];
    if (value !== undefined && (value !== '' || setting === 'INBOXQ_TRUSTED_AUTHSERV_ID')) present[setting] = value;
  }
  const parsed = schema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const setting = String(issue.path[0] ?? 'settings');
        const name = nameOf(setting);
        if (issue.code === 'invalid_type' && present[setting] === undefined) {
          return setting === 'INBOXQ_MAILBOX' && overrideKey
            ? `${name} is required: the address of mailbox "${overrideKey}"`
            : `${name} is required`;
        }
        return issue.message.startsWith(name) ? issue.message : `${name}: ${issue.message}`;
      }),
    );
  }
  return { s: parsed.data, nameOf };
}

/** Which client credential the settings describe, or a problem naming what is missing. */
function credentialOf(s: MailboxSettings, nameOf: NameOf, problems: string[]): ClientCredentialSource | undefined {
  let credential: ClientCredentialSource | undefined;
  if (s.INBOXQ_CLIENT_CREDENTIAL === 'managed-identity') {
    // Only a user-assigned managed identity can be an app registration's federated credential
    // (entra-docs, workload-identity-federation-config-app-trust-managed-identity.md).
    if (s.INBOXQ_MANAGED_IDENTITY_CLIENT_ID === undefined)
      problems.push(
        `${nameOf('INBOXQ_MANAGED_IDENTITY_CLIENT_ID')} is required with INBOXQ_CLIENT_CREDENTIAL=managed-identity: the client id of the user-assigned managed identity that is the app registration's federated credential (a system-assigned identity can't be one; azd up sets it)`,
      );
    else credential = { kind: 'managed-identity', identityClientId: s.INBOXQ_MANAGED_IDENTITY_CLIENT_ID.toLowerCase() };
  } else if (s.INBOXQ_CLIENT_CREDENTIAL === 'certificate') {
    if (s.INBOXQ_KEYVAULT_URL === undefined)
      problems.push(`${nameOf('INBOXQ_KEYVAULT_URL')} is required: the client certificate is read from Key Vault`);
    else
      credential = {
        kind: 'keyvault-certificate',
        vaultUrl: s.INBOXQ_KEYVAULT_URL,
        certificateName: s.INBOXQ_CLIENT_CERTIFICATE_NAME,
      };
  } else if (s.INBOXQ_CLIENT_SECRET !== undefined) {
    credential = { kind: 'secret-setting', secret: s.INBOXQ_CLIENT_SECRET };
  } else if (s.INBOXQ_KEYVAULT_URL !== undefined) {
    credential = { kind: 'keyvault-secret', vaultUrl: s.INBOXQ_KEYVAULT_URL, secretName: s.INBOXQ_CLIENT_SECRET_NAME };
  } else {
    problems.push(
      `${nameOf('INBOXQ_KEYVAULT_URL')} is required (the vault holding the client secret); for local development only, ${nameOf('INBOXQ_CLIENT_SECRET')} may be set instead`,
    );
  }
  return credential;
}

function authorizedSenders(s: MailboxSettings, nameOf: NameOf, problems: string[]): string[] {
  const { senders, invalid } = parseSenderList(s.INBOXQ_AUTHORIZED_SENDERS);
  if (invalid.length > 0) {
    problems.push(
      `${nameOf('INBOXQ_AUTHORIZED_SENDERS')} has entries that are neither an address nor *@domain: ${invalid.join(', ')}`,
    );
  }
  return senders;
}

/** A connection string (Azurite, local) or identity-based service URIs (Azure). */
function storageOf(s: MailboxSettings, problems: string[]): StorageConnection | undefined {
  let storage: StorageConnection | undefined;
  if (s.AzureWebJobsStorage !== undefined) {
    storage = { kind: 'connection-string', connectionString: s.AzureWebJobsStorage };
  } else if (
    s.AzureWebJobsStorage__queueServiceUri &&
    s.AzureWebJobsStorage__tableServiceUri &&
    s.AzureWebJobsStorage__blobServiceUri
  ) {
    storage = {
      kind: 'identity',
      queueServiceUri: s.AzureWebJobsStorage__queueServiceUri,
      tableServiceUri: s.AzureWebJobsStorage__tableServiceUri,
      blobServiceUri: s.AzureWebJobsStorage__blobServiceUri,
      clientId: s.AzureWebJobsStorage__clientId || undefined,
    };
  } else {
    problems.push(
      'AzureWebJobsStorage is required (UseDevelopmentStorage=true for Azurite), or AzureWebJobsStorage__queueServiceUri, __tableServiceUri and __blobServiceUri for identity-based connections',
    );
  }
  return storage;
}

function tlsCaOf(s: MailboxSettings, problems: string[]): Buffer | undefined {
  let tlsCa: Buffer | undefined;
  if (s.INBOXQ_TLS_CA_FILE !== undefined) {
    try {
      tlsCa = readFileSync(s.INBOXQ_TLS_CA_FILE);
    } catch (err) {
      problems.push(
        `INBOXQ_TLS_CA_FILE names a file that can't be read (${(err as NodeJS.ErrnoException).code ?? 'error'}): ${s.INBOXQ_TLS_CA_FILE}`,
      );
    }
  }
  return tlsCa;
}

/** Checks that need several settings together: folders that must not be INBOX, the acknowledgement's placeholders. */
function checkTogether(s: MailboxSettings, nameOf: NameOf, problems: string[]): void {
  if (s.INBOXQ_PROCESSED_ACTION === 'move' && s.INBOXQ_PROCESSED_FOLDER.toUpperCase() === 'INBOX') {
    problems.push(`${nameOf('INBOXQ_PROCESSED_FOLDER')} must not be INBOX: processed mail would be drained again`);
  }
  if (s.INBOXQ_QUARANTINE_FOLDER.toUpperCase() === 'INBOX') {
    problems.push(`${nameOf('INBOXQ_QUARANTINE_FOLDER')} must not be INBOX`);
  }
  const unknownPlaceholders = [...s.INBOXQ_ACKNOWLEDGEMENT_TEXT.matchAll(/\{(\w+)\}/g)]
    .map((m) => m[1]!)
    .filter((p) => !(ACKNOWLEDGEMENT_PLACEHOLDERS as readonly string[]).includes(p));
  if (unknownPlaceholders.length > 0) {
    problems.push(
      `${nameOf('INBOXQ_ACKNOWLEDGEMENT_TEXT')} uses unknown placeholders ${unknownPlaceholders.map((p) => `{${p}}`).join(', ')}; it may use ${ACKNOWLEDGEMENT_PLACEHOLDERS.map((p) => `{${p}}`).join(', ')}`,
    );
  }
}
