/**
 * Named errors. Callers branch on the class (or `code`), never on message text.
 *
 * Every message says what failed, for which mailbox, and what to do about it. None of them may
 * carry a token, a secret or a mail body: constructors take only identifiers and server replies
 * that have been passed through `redact`.
 */

export interface InboxqErrorOptions {
  mailbox?: string | undefined;
  /** What the operator should do. Printed after the message. */
  hint?: string | undefined;
  cause?: unknown;
  /** True when trying again later can succeed (network, throttling, 4xx). */
  retryable?: boolean;
}

export class InboxqError extends Error {
  readonly code: string = 'INBOXQ';
  readonly mailbox: string | undefined;
  readonly hint: string | undefined;
  readonly retryable: boolean;
  /** What failed and for which mailbox, without the hint (for reports that print the hint apart). */
  readonly summary: string;

  constructor(message: string, options: InboxqErrorOptions = {}) {
    const where = options.mailbox ? ` [mailbox ${options.mailbox}]` : '';
    const hint = options.hint ? ` What to do: ${options.hint}` : '';
    super(`${message}${where}.${hint}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.summary = `${message}${where}`;
    this.name = new.target.name;
    this.mailbox = options.mailbox;
    this.hint = options.hint;
    this.retryable = options.retryable ?? false;
  }
}

/** A setting is missing or malformed. Never retryable: the configuration must change. */
export class ConfigError extends InboxqError {
  override readonly code = 'CONFIG';
  constructor(
    readonly problems: readonly string[],
    options: InboxqErrorOptions = {},
  ) {
    super(`Invalid settings: ${problems.join('; ')}`, {
      hint: 'fix the named app settings (local.settings.json locally, the Function App configuration in Azure)',
      ...options,
    });
  }
}

/** The client secret or certificate could not be read from Key Vault. */
export class KeyVaultError extends InboxqError {
  override readonly code = 'KEYVAULT';
}

/** Entra ID refused to issue a token (or could not be reached). */
export class TokenError extends InboxqError {
  override readonly code = 'TOKEN';
  constructor(
    message: string,
    readonly aadsts: string | undefined,
    options: InboxqErrorOptions = {},
  ) {
    super(message, options);
  }
}

export type ImapFailure = 'auth' | 'unreachable' | 'throttled' | 'not-connected' | 'protocol';

/** The IMAP server refused us, could not be reached, or broke the conversation. */
export class ImapError extends InboxqError {
  override readonly code = 'IMAP';
  constructor(
    message: string,
    readonly failure: ImapFailure,
    options: InboxqErrorOptions & { backoffMs?: number | undefined } = {},
  ) {
    super(message, options);
    this.backoffMs = options.backoffMs;
  }

  /** The back-off Exchange suggested with its throttling answer (`Suggested Backoff Time: N milliseconds`). */
  readonly backoffMs: number | undefined;
}

/**
 * `busy`: every SMTP connection the mailbox may have is in use (432 4.3.2, or no slot free);
 * `throttled`: Exchange stopped the mailbox sending for a while (550 5.2.25x, the daily quota, a full mailbox).
 */
export type SmtpFailure =
  'auth' | 'auth-disabled' | 'send-as-denied' | 'unreachable' | 'transient' | 'busy' | 'throttled' | 'rejected';

/** SMTP submission failed. `transient` and `unreachable` are retryable. */
export class SmtpError extends InboxqError {
  override readonly code = 'SMTP';
  constructor(
    message: string,
    readonly failure: SmtpFailure,
    readonly responseCode: number | undefined,
    options: InboxqErrorOptions & { command?: string | undefined; notSent?: boolean; poolClosed?: boolean } = {},
  ) {
    super(message, options);
    this.command = options.command;
    this.notSent = options.notSent ?? false;
    this.poolClosed = options.poolClosed ?? false;
  }

  /** Known not to have reached the server (no slot, or the pool closed before it went out). */
  readonly notSent: boolean;
  /** The message waited in a pool that was closed: it can go out at once on a new one. */
  readonly poolClosed: boolean;

  /** The SMTP command that failed (nodemailer's `command`: CONN, AUTH XOAUTH2, MAIL FROM, DATA, ...). */
  readonly command: string | undefined;

  /**
   * True when the server may have accepted the message although we saw an error: the connection
   * broke with no answer after the message data went out. Anything the server answered with a
   * code, or that failed before DATA, certainly sent nothing.
   */
  get mayHaveBeenSent(): boolean {
    if (this.notSent || this.responseCode !== undefined) return false;
    return !this.command || !/^(CONN|EHLO|HELO|STARTTLS|AUTH|MAIL FROM|RCPT TO)/i.test(this.command);
  }
}

/** Azure Storage (tables, queues, blobs) failed. Retryable: nothing is removed from the inbox. */
export class StorageError extends InboxqError {
  override readonly code = 'STORAGE';
  /** The HTTP status Storage answered, when it answered. */
  readonly status: number | undefined;

  constructor(message: string, options: InboxqErrorOptions & { status?: number | undefined } = {}) {
    super(message, options);
    this.status = options.status;
  }

  /**
   * True when Storage refused this one request for what it carried (a property or body too large,
   * a header it can't take: HTTP 400, 413, 414), or the SDK refused to send it at all. Storage
   * itself is fine: another request goes through.
   */
  get refusedThisRequest(): boolean {
    if (this.status !== undefined) return this.status === 400 || this.status === 413 || this.status === 414;
    const cause = this.cause as { code?: unknown; name?: unknown } | undefined;
    return (
      cause instanceof TypeError ||
      cause instanceof RangeError ||
      cause instanceof URIError ||
      cause?.code === 'ERR_INVALID_CHAR' ||
      cause?.code === 'ERR_HTTP_INVALID_HEADER_VALUE'
    );
  }
}

/** A queue message does not follow the contract. Not retryable: it ends in the poison queue. */
export class InvalidMessageError extends InboxqError {
  override readonly code = 'INVALID_MESSAGE';
  constructor(
    message: string,
    readonly issues: readonly string[],
    options: InboxqErrorOptions = {},
  ) {
    super(`${message}: ${issues.join('; ')}`, options);
  }
}

/** A reply names a task the ledger does not know. */
export class UnknownTaskError extends InboxqError {
  override readonly code = 'UNKNOWN_TASK';
}

/** Another delivery of the same reply is sending it right now; try again later. */
export class ReplyInProgressError extends InboxqError {
  override readonly code = 'REPLY_IN_PROGRESS';
}

/** Short description of any thrown value, safe to log: class name and message, no stack. */
/**
 * Waits for every piece of work to finish, then throws the first failure: nothing started is
 * still under way when the caller goes on (or ends its run).
 */
export async function settleAll(work: Promise<unknown>[]): Promise<void> {
  const settled = await Promise.allSettled(work);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

export function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

/** The thrown value as an Error (anything else thrown is wrapped, its text kept). */
export function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * Where a credential was refused, when it was: Entra ID (an AADSTS answer), the IMAP login or
 * SELECT (not connected to the mailbox), or the SMTP login. Counted as `inboxq.auth.failures`,
 * which the `inboxq-auth-failures` alert reads. Anything else (a network failure) is null.
 */
export function authFailureStage(err: unknown): 'token' | 'imap' | 'smtp' | null {
  if (err instanceof TokenError) return err.aadsts ? 'token' : null;
  if (err instanceof ImapError) return err.failure === 'auth' || err.failure === 'not-connected' ? 'imap' : null;
  if (err instanceof SmtpError) return err.failure === 'auth' || err.failure === 'auth-disabled' ? 'smtp' : null;
  return null;
}
