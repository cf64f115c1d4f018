/**
 * Settings: read once from the app settings (process.env in Functions), validated, and turned into
 * one typed object. Nothing else in inboxq reads process.env.
 *
 * Every problem names the setting, so a missing or malformed value fails at start with a message an
 * operator can act on, not with an undefined deep in a protocol client.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { ConfigError } from '../errors';

export const DEFAULT_AUTHORITY_HOST = 'https://login.microsoftonline.com';
export const DEFAULT_EXCHANGE_RESOURCE = 'https://outlook.office365.com';
export const DEFAULT_CLIENT_SECRET_NAME = 'inboxq-client-secret';
export const DEFAULT_CLIENT_CERTIFICATE_NAME = 'inboxq-client-certificate';

/** Sender policy of one mailbox: who may give work, and how their mail must be authenticated. */
export interface SenderPolicy {
  /** Exact addresses and `*@domain` patterns, lower-cased. Empty admits no one. */
  authorizedSenders: string[];
  /** authserv-id of the first Authentication-Results header; "" means Microsoft 365 (EOP writes none). */
  trustedAuthservId: string;
  /** Accept `X-MS-Exchange-Organization-AuthAs: Internal` when there is no Authentication-Results header. */
  microsoftInternalFallback: boolean;
}

export type ClientCredentialSource =
  | { kind: 'secret-setting'; secret: string }
  | { kind: 'keyvault-secret'; vaultUrl: string; secretName: string }
  /** A certificate in Key Vault (PEM content type), read as its secret: certificate and private key. */
  | { kind: 'keyvault-certificate'; vaultUrl: string; certificateName: string }
  /** Secretless: the Function App's managed identity, as a federated credential on the app registration. */
  | { kind: 'managed-identity'; identityClientId: string | undefined };

export type StorageConnection =
  | { kind: 'connection-string'; connectionString: string }
  | {
      kind: 'identity';
      queueServiceUri: string;
      tableServiceUri: string;
      blobServiceUri: string;
      /** Client id of a user-assigned managed identity, if any. */
      clientId: string | undefined;
    };

export interface InboxqConfig {
  mailbox: string;
  senderPolicy: SenderPolicy;
  identity: {
    tenantId: string;
    clientId: string;
    authorityHost: string;
    /** Resource of Exchange Online; the token scope is `${resource}/.default`. */
    exchangeResource: string;
    credential: ClientCredentialSource;
  };
  keyVault: {
    /** Off Azure (a local vault endpoint) the challenge's resource can't be verified. */
    verifyChallengeResource: boolean;
  };
  imap: { host: string; port: number; secure: boolean };
  smtp: { host: string; port: number };
  /** Extra CA certificates (PEM) trusted for every TLS peer; for local stacks and TLS-inspecting proxies. */
  tlsCa: Buffer | undefined;
  drain: {
    processedAction: 'move' | 'delete';
    processedFolder: string;
    quarantineFolder: string;
    maxMessagesPerRun: number;
    runBudgetMs: number;
    /** Stored mail (blobs) and ledger rows older than this are deleted; 0 keeps them. */
    retentionDays: number;
  };
  reply: {
    /** Replies sent per minute at most (Exchange Online: 30 per mailbox); 0 = no pacing. */
    maxPerMinute: number;
    /** Tell the sender when their answer can't be delivered (its reply ended in the poison queue). */
    failureNotice: boolean;
  };
  storage: StorageConnection;
}

const bool = (name: string) =>
  z
    .string()
    .trim()
    .toLowerCase()
    .refine((v) => ['true', 'false', '1', '0', 'yes', 'no'].includes(v), { message: `${name} must be true or false` })
    .transform((v) => v === 'true' || v === '1' || v === 'yes');

const intIn = (name: string, min: number, max: number) =>
  z
    .string()
    .trim()
    .regex(/^\d+$/, `${name} must be a whole number`)
    .transform(Number)
    .refine((n) => n >= min && n <= max, { message: `${name} must be between ${min} and ${max}` });

const httpsUrl = (name: string) =>
  z
    .string()
    .trim()
    .refine((v) => /^https:\/\/[^/\s]+/i.test(v), { message: `${name} must be an https:// URL` })
    .transform((v) => v.replace(/\/+$/, ''));

const hostName = (name: string) =>
  z
    .string()
    .trim()
    .regex(/^[A-Za-z0-9.-]+$|^\[[0-9a-fA-F:]+\]$/, `${name} must be a host name or address`);

const emailAddress = (name: string) =>
  z
    .string()
    .trim()
    .toLowerCase()
    .regex(/^[^\s@<>(),;:"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/, `${name} must be an e-mail address like agent@example.com`);

const tenantId = z
  .string()
  .trim()
  .refine((v) => !['common', 'organizations', 'consumers'].includes(v.toLowerCase()), {
    message: 'INBOXQ_TENANT_ID must be your tenant id (a GUID) or verified domain: app-only tokens need a specific tenant, not common/organizations',
  })
  .refine((v) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v) || /^[a-z0-9-]+(\.[a-z0-9-]+)+$/i.test(v), {
    message: 'INBOXQ_TENANT_ID must be a GUID or a verified domain name',
  });

/** An entry of INBOXQ_AUTHORIZED_SENDERS: `someone@example.com` or `*@example.com`. */
const senderPattern = /^(\*|[^\s@<>(),;:"*]+)@[a-z0-9-]+(\.[a-z0-9-]+)+$/;

export function parseSenderList(raw: string): { senders: string[]; invalid: string[] } {
  const senders: string[] = [];
  const invalid: string[] = [];
  for (const part of raw.split(/[,;\s]+/)) {
    const entry = part.trim().toLowerCase();
    if (!entry) continue;
    (senderPattern.test(entry) ? senders : invalid).push(entry);
  }
  return { senders, invalid };
}

/** NCRONTAB with six fields ({second} {minute} {hour} {day} {month} {day-of-week}), as the timer trigger wants. */
export function isNcrontab(expr: string): boolean {
  const fields = expr.trim().split(/\s+/);
  return fields.length === 6 && fields.every((f) => /^[0-9*/,\-A-Za-z]+$/.test(f));
}

const schema = z.object({
  INBOXQ_MAILBOX: emailAddress('INBOXQ_MAILBOX'),
  INBOXQ_TENANT_ID: tenantId,
  INBOXQ_CLIENT_ID: z
    .string()
    .trim()
    .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i, 'INBOXQ_CLIENT_ID must be the application (client) id, a GUID'),
  INBOXQ_CLIENT_SECRET: z.string().optional(),
  INBOXQ_KEYVAULT_URL: httpsUrl('INBOXQ_KEYVAULT_URL').optional(),
  INBOXQ_CLIENT_SECRET_NAME: z
    .string()
    .trim()
    .regex(/^[0-9A-Za-z-]{1,127}$/, 'INBOXQ_CLIENT_SECRET_NAME must be a Key Vault secret name (letters, digits, dashes)')
    .default(DEFAULT_CLIENT_SECRET_NAME),
  INBOXQ_CLIENT_CREDENTIAL: z
    .enum(['secret', 'certificate', 'managed-identity'], { message: 'INBOXQ_CLIENT_CREDENTIAL must be secret, certificate or managed-identity' })
    .default('secret'),
  INBOXQ_CLIENT_CERTIFICATE_NAME: z
    .string()
    .trim()
    .regex(/^[0-9A-Za-z-]{1,127}$/, 'INBOXQ_CLIENT_CERTIFICATE_NAME must be a Key Vault certificate name (letters, digits, dashes)')
    .default(DEFAULT_CLIENT_CERTIFICATE_NAME),
  AZURE_CLIENT_ID: z.string().trim().optional(),
  INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE: bool('INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE').default(true),
  INBOXQ_AUTHORITY_HOST: httpsUrl('INBOXQ_AUTHORITY_HOST').default(DEFAULT_AUTHORITY_HOST),
  INBOXQ_EXCHANGE_RESOURCE: httpsUrl('INBOXQ_EXCHANGE_RESOURCE').default(DEFAULT_EXCHANGE_RESOURCE),
  INBOXQ_IMAP_HOST: hostName('INBOXQ_IMAP_HOST').default('outlook.office365.com'),
  INBOXQ_IMAP_PORT: intIn('INBOXQ_IMAP_PORT', 1, 65535).default(993),
  INBOXQ_IMAP_SECURE: bool('INBOXQ_IMAP_SECURE').default(true),
  INBOXQ_SMTP_HOST: hostName('INBOXQ_SMTP_HOST').default('smtp.office365.com'),
  INBOXQ_SMTP_PORT: intIn('INBOXQ_SMTP_PORT', 1, 65535).default(587),
  INBOXQ_TLS_CA_FILE: z.string().trim().min(1).optional(),
  INBOXQ_AUTHORIZED_SENDERS: z.string().default(''),
  INBOXQ_TRUSTED_AUTHSERV_ID: z.string().trim().toLowerCase().default(''),
  INBOXQ_MICROSOFT_INTERNAL_FALLBACK: bool('INBOXQ_MICROSOFT_INTERNAL_FALLBACK').default(false),
  INBOXQ_PROCESSED_ACTION: z.enum(['move', 'delete'], { message: 'INBOXQ_PROCESSED_ACTION must be move or delete' }).default('move'),
  INBOXQ_PROCESSED_FOLDER: z.string().trim().min(1).default('inboxq-processed'),
  INBOXQ_QUARANTINE_FOLDER: z.string().trim().min(1).default('inboxq-quarantine'),
  INBOXQ_MAX_MESSAGES_PER_RUN: intIn('INBOXQ_MAX_MESSAGES_PER_RUN', 1, 100000).default(500),
  INBOXQ_RUN_BUDGET_SECONDS: intIn('INBOXQ_RUN_BUDGET_SECONDS', 5, 3600).default(240),
  INBOXQ_MAIL_RETENTION_DAYS: intIn('INBOXQ_MAIL_RETENTION_DAYS', 0, 3650).default(30),
  INBOXQ_SMTP_MAX_PER_MINUTE: intIn('INBOXQ_SMTP_MAX_PER_MINUTE', 0, 10000).default(30),
  INBOXQ_FAILURE_NOTICE: bool('INBOXQ_FAILURE_NOTICE').default(true),
  INBOXQ_DRAIN_SCHEDULE: z
    .string()
    .refine(isNcrontab, { message: 'INBOXQ_DRAIN_SCHEDULE must be an NCRONTAB expression with six fields, e.g. "0 */1 * * * *"' })
    .optional(),
  AzureWebJobsStorage: z.string().trim().min(1).optional(),
  AzureWebJobsStorage__queueServiceUri: httpsUrl('AzureWebJobsStorage__queueServiceUri').optional(),
  AzureWebJobsStorage__tableServiceUri: httpsUrl('AzureWebJobsStorage__tableServiceUri').optional(),
  AzureWebJobsStorage__blobServiceUri: httpsUrl('AzureWebJobsStorage__blobServiceUri').optional(),
  AzureWebJobsStorage__clientId: z.string().trim().optional(),
});

export type Env = Record<string, string | undefined>;

/** Validates the settings and returns the typed config, or throws a ConfigError listing every problem. */
export function loadConfig(env: Env): InboxqConfig {
  // Empty strings count as unset, the way the portal and local.settings.json present them.
  const present: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    const value = env[key];
    if (value !== undefined && (value !== '' || key === 'INBOXQ_TRUSTED_AUTHSERV_ID')) present[key] = value;
  }
  const parsed = schema.safeParse(present);
  if (!parsed.success) {
    throw new ConfigError(
      parsed.error.issues.map((issue) => {
        const setting = String(issue.path[0] ?? 'settings');
        return issue.code === 'invalid_type' && present[setting] === undefined
          ? `${setting} is required`
          : issue.message.startsWith(setting)
            ? issue.message
            : `${setting}: ${issue.message}`;
      }),
    );
  }
  const s = parsed.data;
  const problems: string[] = [];

  let credential: ClientCredentialSource | undefined;
  if (s.INBOXQ_CLIENT_CREDENTIAL === 'managed-identity') {
    credential = { kind: 'managed-identity', identityClientId: s.AZURE_CLIENT_ID || undefined };
  } else if (s.INBOXQ_CLIENT_CREDENTIAL === 'certificate') {
    if (s.INBOXQ_KEYVAULT_URL === undefined) problems.push('INBOXQ_KEYVAULT_URL is required: the client certificate is read from Key Vault');
    else credential = { kind: 'keyvault-certificate', vaultUrl: s.INBOXQ_KEYVAULT_URL, certificateName: s.INBOXQ_CLIENT_CERTIFICATE_NAME };
  } else if (s.INBOXQ_CLIENT_SECRET !== undefined) {
    credential = { kind: 'secret-setting', secret: s.INBOXQ_CLIENT_SECRET };
  } else if (s.INBOXQ_KEYVAULT_URL !== undefined) {
    credential = { kind: 'keyvault-secret', vaultUrl: s.INBOXQ_KEYVAULT_URL, secretName: s.INBOXQ_CLIENT_SECRET_NAME };
  } else {
    problems.push('INBOXQ_KEYVAULT_URL is required (the vault holding the client secret); for local development only, INBOXQ_CLIENT_SECRET may be set instead');
  }

  const { senders, invalid } = parseSenderList(s.INBOXQ_AUTHORIZED_SENDERS);
  if (invalid.length > 0) {
    problems.push(`INBOXQ_AUTHORIZED_SENDERS has entries that are neither an address nor *@domain: ${invalid.join(', ')}`);
  }

  let storage: StorageConnection | undefined;
  if (s.AzureWebJobsStorage !== undefined) {
    storage = { kind: 'connection-string', connectionString: s.AzureWebJobsStorage };
  } else if (s.AzureWebJobsStorage__queueServiceUri && s.AzureWebJobsStorage__tableServiceUri && s.AzureWebJobsStorage__blobServiceUri) {
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

  let tlsCa: Buffer | undefined;
  if (s.INBOXQ_TLS_CA_FILE !== undefined) {
    try {
      tlsCa = readFileSync(s.INBOXQ_TLS_CA_FILE);
    } catch (err) {
      problems.push(`INBOXQ_TLS_CA_FILE names a file that can't be read (${(err as NodeJS.ErrnoException).code ?? 'error'}): ${s.INBOXQ_TLS_CA_FILE}`);
    }
  }

  if (s.INBOXQ_PROCESSED_ACTION === 'move' && s.INBOXQ_PROCESSED_FOLDER.toUpperCase() === 'INBOX') {
    problems.push('INBOXQ_PROCESSED_FOLDER must not be INBOX: processed mail would be drained again');
  }
  if (s.INBOXQ_QUARANTINE_FOLDER.toUpperCase() === 'INBOX') {
    problems.push('INBOXQ_QUARANTINE_FOLDER must not be INBOX');
  }

  if (problems.length > 0 || !credential || !storage) throw new ConfigError(problems, { mailbox: s.INBOXQ_MAILBOX });

  return {
    mailbox: s.INBOXQ_MAILBOX,
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
    keyVault: { verifyChallengeResource: s.INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE },
    imap: { host: s.INBOXQ_IMAP_HOST, port: s.INBOXQ_IMAP_PORT, secure: s.INBOXQ_IMAP_SECURE },
    smtp: { host: s.INBOXQ_SMTP_HOST, port: s.INBOXQ_SMTP_PORT },
    tlsCa,
    drain: {
      processedAction: s.INBOXQ_PROCESSED_ACTION,
      processedFolder: s.INBOXQ_PROCESSED_FOLDER,
      quarantineFolder: s.INBOXQ_QUARANTINE_FOLDER,
      maxMessagesPerRun: s.INBOXQ_MAX_MESSAGES_PER_RUN,
      runBudgetMs: s.INBOXQ_RUN_BUDGET_SECONDS * 1000,
      retentionDays: s.INBOXQ_MAIL_RETENTION_DAYS,
    },
    reply: { maxPerMinute: s.INBOXQ_SMTP_MAX_PER_MINUTE, failureNotice: s.INBOXQ_FAILURE_NOTICE },
    storage,
  };
}

/** The names of every setting inboxq reads, for docs and the example settings file. */
export const SETTING_NAMES = Object.keys(schema.shape);
