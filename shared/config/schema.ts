/**
 * The schema of the app settings: every setting inboxq reads, its default, and the message that
 * names it when its value is wrong. A deployment serves one mailbox (INBOXQ_MAILBOX and the other
 * INBOXQ_* settings) or several (INBOXQ_MAILBOXES, with `INBOXQ_<KEY>__<SETTING>` overriding a
 * setting for one mailbox); DEPLOYMENT_SETTINGS can't be set per mailbox.
 *
 * Adding a setting: CONTRIBUTING.md lists the places it goes (a test fails for each one missed).
 */
import { z } from 'zod';

export const DEFAULT_AUTHORITY_HOST = 'https://login.microsoftonline.com';
export const DEFAULT_EXCHANGE_RESOURCE = 'https://outlook.office365.com';
export const DEFAULT_CLIENT_SECRET_NAME = 'inboxq-client-secret';
export const DEFAULT_CLIENT_CERTIFICATE_NAME = 'inboxq-client-certificate';
/** A drain holds its mailbox this long, renewed before each batch; a run killed mid-batch frees it after this. */
export const DEFAULT_DRAIN_LEASE_SECONDS = 300;
/** A reply being sent is left to its delivery this long before another delivery may take it over. */
export const DEFAULT_REPLY_LEASE_SECONDS = 60;

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
    .refine((v) => !RESERVED_QUEUES.has(v) && !v.startsWith('replies-') && !v.endsWith('-poison'), {
      message: `${name} must not be one of inboxq's own queues (replies, replies-*, drain-requests, *-poison)`,
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
export function schemaFor(n: (setting: string) => string) {
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
    INBOXQ_MANAGED_IDENTITY_CLIENT_ID: z
      .string()
      .trim()
      .regex(
        /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i,
        `${n('INBOXQ_MANAGED_IDENTITY_CLIENT_ID')} must be the client id (a GUID) of a user-assigned managed identity`,
      )
      .optional(),
    INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE: bool(n('INBOXQ_KEYVAULT_VERIFY_CHALLENGE_RESOURCE')).default(true),
    INBOXQ_KEYVAULT_INSTANCE_DISCOVERY: bool(n('INBOXQ_KEYVAULT_INSTANCE_DISCOVERY')).default(true),
    INBOXQ_AUTHORITY_HOST: httpsUrl(n('INBOXQ_AUTHORITY_HOST')).default(DEFAULT_AUTHORITY_HOST),
    INBOXQ_EXCHANGE_RESOURCE: httpsUrl(n('INBOXQ_EXCHANGE_RESOURCE')).default(DEFAULT_EXCHANGE_RESOURCE),
    INBOXQ_IMAP_HOST: hostName(n('INBOXQ_IMAP_HOST')).default('outlook.office365.com'),
    INBOXQ_IMAP_PORT: intIn(n('INBOXQ_IMAP_PORT'), 1, 65535).default(993),
    INBOXQ_IMAP_SECURE: bool(n('INBOXQ_IMAP_SECURE')).default(true),
    INBOXQ_IMAP_KEEP_WARM_SECONDS: intIn(n('INBOXQ_IMAP_KEEP_WARM_SECONDS'), 0, 1500).default(300),
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
    INBOXQ_DRAIN_LEASE_SECONDS: intIn(n('INBOXQ_DRAIN_LEASE_SECONDS'), 30, 3600).default(DEFAULT_DRAIN_LEASE_SECONDS),
    INBOXQ_MAIL_RETENTION_DAYS: intIn(n('INBOXQ_MAIL_RETENTION_DAYS'), 0, 3650).default(30),
    INBOXQ_MAILBOX_RETENTION_DAYS: intIn(n('INBOXQ_MAILBOX_RETENTION_DAYS'), 0, 3650).default(30),
    INBOXQ_SMTP_MAX_PER_MINUTE: intIn(n('INBOXQ_SMTP_MAX_PER_MINUTE'), 0, 10000).default(30),
    INBOXQ_REPLY_LEASE_SECONDS: intIn(n('INBOXQ_REPLY_LEASE_SECONDS'), 10, 3600).default(DEFAULT_REPLY_LEASE_SECONDS),
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
  'INBOXQ_KEYVAULT_INSTANCE_DISCOVERY',
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

/** True when inboxq reads a setting of this name (in its plain INBOXQ_* form). */
export function isSetting(setting: string): boolean {
  return setting in CANONICAL.shape;
}

/**
 * Settings the Azure SDK reads itself (DefaultAzureCredential, for the Key Vault login), never
 * inboxq: listed so the README's table and the example settings name them too.
 */
export const AZURE_SDK_SETTINGS = ['AZURE_CLIENT_ID', 'AZURE_TENANT_ID', 'AZURE_CLIENT_SECRET', 'AZURE_AUTHORITY_HOST'];

/** One mailbox's settings as the schema gives them: validated, defaults filled in. */
export type MailboxSettings = z.output<ReturnType<typeof schemaFor>>;
