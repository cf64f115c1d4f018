/**
 * Settings: read once from the app settings (process.env in Functions), validated, and turned into
 * one typed object. Nothing else in inboxq reads process.env.
 *
 * Every problem names the setting, so a missing or malformed value fails at start with a message an
 * operator can act on, not with an undefined deep in a protocol client.
 *
 * One deployment serves one mailbox (INBOXQ_MAILBOX and the other INBOXQ_* settings) or several:
 * INBOXQ_MAILBOXES lists their keys, and each mailbox's settings are the INBOXQ_* settings with
 * `INBOXQ_<KEY>__<SETTING>` overriding them, e.g. INBOXQ_SALES__MAILBOX, INBOXQ_SALES__CLIENT_ID.
 * A few settings belong to the deployment and can't be set per mailbox (DEPLOYMENT_SETTINGS).
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
  /** The mailbox's key in INBOXQ_MAILBOXES; `default` when the deployment serves one mailbox. */
  key: string;
  mailbox: string;
  /** The queue its tasks go to: `tasks`, or `tasks-<key>` when the deployment serves several mailboxes. */
  tasksQueue: string;
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
  /** A short threaded answer to the first mail of each conversation, with its task id. */
  acknowledgement: { enabled: boolean; text: string };
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
    .regex(
      /^[^\s@<>(),;:"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$/,
      `${name} must be an e-mail address like agent@example.com`,
    );

const tenantId = (name: string) =>
  z
    .string()
    .trim()
    .refine((v) => !['common', 'organizations', 'consumers'].includes(v.toLowerCase()), {
      message: `${name} must be your tenant id (a GUID) or verified domain: app-only tokens need a specific tenant, not common/organizations`,
    })
    .refine(
      (v) =>
        /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v) ||
        /^[a-z0-9-]+(\.[a-z0-9-]+)+$/i.test(v),
      {
        message: `${name} must be a GUID or a verified domain name`,
      },
    );

const vaultObjectName = (name: string, what: string) =>
  z
    .string()
    .trim()
    .regex(/^[0-9A-Za-z-]{1,127}$/, `${name} must be a Key Vault ${what} name (letters, digits, dashes)`);

/** Queues inboxq itself reads; a mailbox's tasks can't go there. */
const RESERVED_QUEUES = new Set(['replies', 'drain-requests']);

const queueName = (name: string) =>
  z
    .string()
    .trim()
    .refine((v) => /^[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]$/.test(v), {
      message: `${name} must be a Storage queue name: 3-63 lower-case letters, digits and single dashes, starting and ending with a letter or digit`,
    })
    .refine((v) => !RESERVED_QUEUES.has(v) && !v.endsWith('-poison'), {
      message: `${name} must not be one of inboxq's own queues (replies, drain-requests, *-poison)`,
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

/** Placeholders the acknowledgement text may use. */
export const ACKNOWLEDGEMENT_PLACEHOLDERS = ['taskId', 'conversationId', 'subject', 'mailbox'] as const;

export const DEFAULT_ACKNOWLEDGEMENT_TEXT = [
  'Hello,',
  '',
  'your message "{subject}" was received and is being worked on as task {taskId}.',
  'The answer will come in this thread; to add to your request, reply to this mail.',
  '',
  '(This acknowledgement was sent automatically.)',
].join('\n');

/** `\n` in an app setting (which is one line in most editors) stands for a line break. */
function settingText(raw: string): string {
  return raw.replace(/\\n/g, '\n');
}

/**
 * The schema of one mailbox's settings. `n` gives the name of the app setting each value came
 * from (INBOXQ_SALES__CLIENT_ID when that override was set), so messages name what to fix.
 */
function schemaFor(n: (setting: string) => string) {
  return z.object({
    INBOXQ_MAILBOX: emailAddress(n('INBOXQ_MAILBOX')),
    INBOXQ_TASKS_QUEUE: queueName(n('INBOXQ_TASKS_QUEUE')).optional(),
    INBOXQ_TENANT_ID: tenantId(n('INBOXQ_TENANT_ID')),
    INBOXQ_CLIENT_ID: z
      .string()
      .trim()
      .regex(
        /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i,
        `${n('INBOXQ_CLIENT_ID')} must be the application (client) id, a GUID`,
      ),
    INBOXQ_CLIENT_SECRET: z.string().optional(),
    INBOXQ_KEYVAULT_URL: httpsUrl(n('INBOXQ_KEYVAULT_URL')).optional(),
    INBOXQ_CLIENT_SECRET_NAME: vaultObjectName(n('INBOXQ_CLIENT_SECRET_NAME'), 'secret').default(
      DEFAULT_CLIENT_SECRET_NAME,
    ),
    INBOXQ_CLIENT_CREDENTIAL: z
      .enum(['secret', 'certificate', 'managed-identity'], {
        message: `${n('INBOXQ_CLIENT_CREDENTIAL')} must be secret, certificate or managed-identity`,
      })
      .default('secret'),
    INBOXQ_CLIENT_CERTIFICATE_NAME: vaultObjectName(n('INBOXQ_CLIENT_CERTIFICATE_NAME'), 'certificate').default(
      DEFAULT_CLIENT_CERTIFICATE_NAME,
    ),
    AZURE_CLIENT_ID: z.string().trim().optional(),
    INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE: bool(n('INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE')).default(true),
    INBOXQ_AUTHORITY_HOST: httpsUrl(n('INBOXQ_AUTHORITY_HOST')).default(DEFAULT_AUTHORITY_HOST),
    INBOXQ_EXCHANGE_RESOURCE: httpsUrl(n('INBOXQ_EXCHANGE_RESOURCE')).default(DEFAULT_EXCHANGE_RESOURCE),
    INBOXQ_IMAP_HOST: hostName(n('INBOXQ_IMAP_HOST')).default('outlook.office365.com'),
    INBOXQ_IMAP_PORT: intIn(n('INBOXQ_IMAP_PORT'), 1, 65535).default(993),
    INBOXQ_IMAP_SECURE: bool(n('INBOXQ_IMAP_SECURE')).default(true),
    INBOXQ_SMTP_HOST: hostName(n('INBOXQ_SMTP_HOST')).default('smtp.office365.com'),
    INBOXQ_SMTP_PORT: intIn(n('INBOXQ_SMTP_PORT'), 1, 65535).default(587),
    INBOXQ_TLS_CA_FILE: z.string().trim().min(1).optional(),
    INBOXQ_AUTHORIZED_SENDERS: z.string().default(''),
    INBOXQ_TRUSTED_AUTHSERV_ID: z.string().trim().toLowerCase().default(''),
    INBOXQ_MICROSOFT_INTERNAL_FALLBACK: bool(n('INBOXQ_MICROSOFT_INTERNAL_FALLBACK')).default(false),
    INBOXQ_PROCESSED_ACTION: z
      .enum(['move', 'delete'], { message: `${n('INBOXQ_PROCESSED_ACTION')} must be move or delete` })
      .default('move'),
    INBOXQ_PROCESSED_FOLDER: z.string().trim().min(1).default('inboxq-processed'),
    INBOXQ_QUARANTINE_FOLDER: z.string().trim().min(1).default('inboxq-quarantine'),
    INBOXQ_MAX_MESSAGES_PER_RUN: intIn(n('INBOXQ_MAX_MESSAGES_PER_RUN'), 1, 100000).default(500),
    INBOXQ_RUN_BUDGET_SECONDS: intIn(n('INBOXQ_RUN_BUDGET_SECONDS'), 5, 3600).default(240),
    INBOXQ_MAIL_RETENTION_DAYS: intIn(n('INBOXQ_MAIL_RETENTION_DAYS'), 0, 3650).default(30),
    INBOXQ_SMTP_MAX_PER_MINUTE: intIn(n('INBOXQ_SMTP_MAX_PER_MINUTE'), 0, 10000).default(30),
    INBOXQ_FAILURE_NOTICE: bool(n('INBOXQ_FAILURE_NOTICE')).default(true),
    INBOXQ_ACKNOWLEDGE: bool(n('INBOXQ_ACKNOWLEDGE')).default(true),
    INBOXQ_ACKNOWLEDGEMENT_TEXT: z
      .string()
      .transform(settingText)
      .refine((v) => v.trim().length > 0 && v.length <= 4000, {
        message: `${n('INBOXQ_ACKNOWLEDGEMENT_TEXT')} must be 1 to 4000 characters`,
      })
      .default(DEFAULT_ACKNOWLEDGEMENT_TEXT),
    INBOXQ_DRAIN_SCHEDULE: z
      .string()
      .refine(isNcrontab, {
        message: 'INBOXQ_DRAIN_SCHEDULE must be an NCRONTAB expression with six fields, e.g. "0 */1 * * * *"',
      })
      .optional(),
    AzureWebJobsStorage: z.string().trim().min(1).optional(),
    AzureWebJobsStorage__queueServiceUri: httpsUrl('AzureWebJobsStorage__queueServiceUri').optional(),
    AzureWebJobsStorage__tableServiceUri: httpsUrl('AzureWebJobsStorage__tableServiceUri').optional(),
    AzureWebJobsStorage__blobServiceUri: httpsUrl('AzureWebJobsStorage__blobServiceUri').optional(),
    AzureWebJobsStorage__clientId: z.string().trim().optional(),
  });
}

const CANONICAL = schemaFor((s) => s);

/** The names of every setting inboxq reads (without the per-mailbox forms), for docs and the example settings file. */
export const SETTING_NAMES = ['INBOXQ_MAILBOXES', ...Object.keys(CANONICAL.shape)];

/** Settings of the whole deployment: the same for every mailbox, never `INBOXQ_<KEY>__...`. */
export const DEPLOYMENT_SETTINGS = new Set([
  'INBOXQ_MAILBOXES',
  'INBOXQ_DRAIN_SCHEDULE',
  'INBOXQ_TLS_CA_FILE',
  'INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE',
  'AZURE_CLIENT_ID',
  'AzureWebJobsStorage',
  'AzureWebJobsStorage__queueServiceUri',
  'AzureWebJobsStorage__tableServiceUri',
  'AzureWebJobsStorage__blobServiceUri',
  'AzureWebJobsStorage__clientId',
]);

/** The app setting that sets `setting` for the mailbox with `key` alone: INBOXQ_SALES__CLIENT_ID. */
export function mailboxSettingName(key: string, setting: string): string {
  return `INBOXQ_${key.toUpperCase()}__${setting.slice('INBOXQ_'.length)}`;
}

export type Env = Record<string, string | undefined>;

/** Every mailbox of a deployment, validated together. */
export interface Deployment {
  mailboxes: InboxqConfig[];
}

const MAILBOX_KEY = /^[a-z][a-z0-9]{0,23}$/;
const OVERRIDE = /^INBOXQ_([A-Z0-9]+)__([A-Z0-9_]+)$/;

/**
 * Validates the settings of every mailbox the deployment serves and returns their configs, or
 * throws one ConfigError listing every problem, each naming the mailbox and the app setting.
 */
export function loadDeployment(env: Env): Deployment {
  const listed = env['INBOXQ_MAILBOXES']?.trim();
  const overrides = Object.keys(env).filter((k) => OVERRIDE.test(k) && env[k] !== undefined);
  if (!listed) {
    if (overrides.length > 0) {
      throw new ConfigError([
        `${overrides.join(', ')}: per-mailbox settings need INBOXQ_MAILBOXES, the list of mailbox keys (e.g. INBOXQ_MAILBOXES=sales,support); with one mailbox, set INBOXQ_* directly`,
      ]);
    }
    return { mailboxes: [loadMailbox(env, 'default', null)] };
  }

  const problems: string[] = [];
  if (env['INBOXQ_MAILBOX']) {
    problems.push(
      'INBOXQ_MAILBOX is set, but with INBOXQ_MAILBOXES each mailbox names its address in INBOXQ_<KEY>__MAILBOX: remove INBOXQ_MAILBOX',
    );
  }
  const keys: string[] = [];
  for (const part of listed.split(/[,;\s]+/).filter(Boolean)) {
    const key = part.toLowerCase();
    if (!MAILBOX_KEY.test(key))
      problems.push(`INBOXQ_MAILBOXES: "${part}" is not a mailbox key (a letter, then up to 23 letters or digits)`);
    else if (keys.includes(key)) problems.push(`INBOXQ_MAILBOXES lists "${key}" twice`);
    else keys.push(key);
  }
  for (const name of overrides) {
    const [, key, rest] = OVERRIDE.exec(name)!;
    const setting = `INBOXQ_${rest}`;
    if (!keys.includes(key!.toLowerCase()))
      problems.push(
        `${name} names mailbox "${key!.toLowerCase()}", which INBOXQ_MAILBOXES does not list (${keys.join(', ')})`,
      );
    else if (DEPLOYMENT_SETTINGS.has(setting))
      problems.push(`${name}: ${setting} applies to the whole deployment and can't be set per mailbox`);
    else if (!(setting in CANONICAL.shape)) problems.push(`${name}: inboxq has no setting ${setting}`);
  }

  const mailboxes: InboxqConfig[] = [];
  for (const key of keys) {
    try {
      mailboxes.push(loadMailbox(env, key, key));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      problems.push(...err.problems.map((p) => `mailbox "${key}": ${p}`));
    }
  }
  // Two drains of one inbox would take each other's mail: every mailbox needs an inbox of its own.
  for (let i = 0; i < mailboxes.length; i++) {
    for (let j = i + 1; j < mailboxes.length; j++) {
      const a = mailboxes[i]!;
      const b = mailboxes[j]!;
      if (a.mailbox === b.mailbox && a.imap.host.toLowerCase() === b.imap.host.toLowerCase()) {
        problems.push(
          `mailboxes "${a.key}" and "${b.key}" both point at the inbox of ${a.mailbox} (${mailboxSettingName(a.key, 'INBOXQ_MAILBOX')}, ${mailboxSettingName(b.key, 'INBOXQ_MAILBOX')}): give each mailbox its own address`,
        );
      }
    }
  }
  if (problems.length > 0) throw new ConfigError(problems);
  return { mailboxes };
}

/**
 * The config of a deployment that serves one mailbox (and of tests and tools that look at one):
 * its only mailbox, or, with several, the one named by key or address.
 */
export function loadConfig(env: Env, mailbox?: string): InboxqConfig {
  const { mailboxes } = loadDeployment(env);
  if (mailbox === undefined) {
    if (mailboxes.length === 1) return mailboxes[0]!;
    throw new ConfigError([
      `this deployment serves ${mailboxes.length} mailboxes (${mailboxes.map((m) => m.key).join(', ')}): name one`,
    ]);
  }
  const found = findMailbox(mailboxes, mailbox);
  if (!found) throw new ConfigError([notConfiguredHere(mailbox, mailboxes)]);
  return found;
}

/** The mailbox named by its key or its address, case aside. */
export function findMailbox<T extends Pick<InboxqConfig, 'key' | 'mailbox'>>(
  mailboxes: readonly T[],
  keyOrAddress: string,
): T | undefined {
  const wanted = keyOrAddress.trim().toLowerCase();
  return mailboxes.find((m) => m.key === wanted || m.mailbox === wanted);
}

/** "mailbox X is not configured here (INBOXQ_MAILBOX is a@b)" or "(sales: a@b, support: c@d)". */
export function notConfiguredHere(
  keyOrAddress: string,
  mailboxes: readonly Pick<InboxqConfig, 'key' | 'mailbox'>[],
): string {
  const served = mailboxes
    .map((m) => (m.key === 'default' ? `INBOXQ_MAILBOX is ${m.mailbox}` : `${m.key}: ${m.mailbox}`))
    .join(', ');
  return `mailbox ${keyOrAddress} is not configured here (${served})`;
}

/** One mailbox's config: `key` null for a single-mailbox deployment (plain INBOXQ_* settings). */
function loadMailbox(env: Env, key: string, overrideKey: string | null): InboxqConfig {
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
  const s = parsed.data;
  const problems: string[] = [];

  let credential: ClientCredentialSource | undefined;
  if (s.INBOXQ_CLIENT_CREDENTIAL === 'managed-identity') {
    credential = { kind: 'managed-identity', identityClientId: s.AZURE_CLIENT_ID || undefined };
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

  const { senders, invalid } = parseSenderList(s.INBOXQ_AUTHORIZED_SENDERS);
  if (invalid.length > 0) {
    problems.push(
      `${nameOf('INBOXQ_AUTHORIZED_SENDERS')} has entries that are neither an address nor *@domain: ${invalid.join(', ')}`,
    );
  }

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

  if (problems.length > 0 || !credential || !storage) throw new ConfigError(problems, { mailbox: s.INBOXQ_MAILBOX });

  return {
    key,
    mailbox: s.INBOXQ_MAILBOX,
    tasksQueue: s.INBOXQ_TASKS_QUEUE ?? (overrideKey === null ? 'tasks' : `tasks-${overrideKey}`),
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
    acknowledgement: { enabled: s.INBOXQ_ACKNOWLEDGE, text: s.INBOXQ_ACKNOWLEDGEMENT_TEXT },
    storage,
  };
}
