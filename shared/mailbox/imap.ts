/**
 * The dedicated mailbox over IMAP with XOAUTH2 (imapflow).
 *
 * imapflow reads the access token once, at connect; a new session per run gets a fresh one. When
 * the server refuses a token MSAL still thinks valid (revoked, clock skew, expired early), the
 * session is opened once more with a token fetched past the cache.
 *
 * Nothing here marks mail as read: the source is fetched with BODY.PEEK, so a half-finished run
 * leaves the inbox as it found it.
 */
import type { Readable } from 'node:stream';

import { ImapFlow, type ImapFlowOptions } from 'imapflow';

import type { InboxqConfig } from '../config/types';
import type { TokenSource } from '../credentials/token';
import { ImapError, type ImapFailure } from '../errors';
import type { Logger } from '../telemetry/log';

export interface MailboxSessionOptions {
  config: Pick<InboxqConfig, 'mailbox' | 'imap' | 'tlsCa'>;
  tokens: TokenSource;
  log: Logger;
  /** Connection timeout in ms (default 30 s). */
  timeoutMs?: number;
}

export interface MailboxEntry {
  uid: number;
  size: number;
  internalDate: Date | undefined;
  /** The whole source, when the listing brought it along (a mail shorter than LISTED_SOURCE_BYTES in a folder of a few). */
  source?: Buffer;
}

/**
 * The listing of a folder of at most LISTED_SOURCES_UP_TO mails asks for each one's first
 * LISTED_SOURCE_BYTES too: a mail shorter than that comes whole with it, and needs no FETCH of its
 * own (one IMAP round trip fewer per run in the usual case, a few small mails). At most 6.4 MB.
 * A mail as long or longer is fetched as before (its size as the server reports it is not trusted
 * for this: Exchange's RFC822.SIZE is not always the length of what it sends).
 */
export const LISTED_SOURCE_BYTES = 64 * 1024;
export const LISTED_SOURCES_UP_TO = 100;

/** A throttling back-off longer than this ends the run, and is waited out by the runs that follow. */
export const LONG_BACKOFF_MS = 30_000;
/** A command throttled this many times ends the run; the next run continues. */
const MAX_THROTTLED_ATTEMPTS = 2;
/** A session with no command for this long gets a NOOP while a batch is being worked on. */
const KEEPALIVE_MS = 20_000;

export class MailboxSession {
  private knownFolders: Set<string> | undefined;
  uidValidity: bigint = 0n;
  /** Commands Exchange throttled in this session (each one waited out). */
  throttled = 0;
  /** Commands under way, and a download stream not yet consumed: the session is not idle. */
  private busy = 0;
  private lastActivity = Date.now();

  private constructor(
    readonly client: ImapFlow,
    readonly mailbox: string,
    private readonly commandErrors: CommandErrors,
    private readonly imap: InboxqConfig['imap'],
    /** When the token the session logged in with expires (ms): Exchange Online ends the session then. */
    readonly tokenExpiresAt: number,
  ) {}

  /** The connection is up and logged in (imapflow's `usable`). */
  get usable(): boolean {
    return this.client.usable;
  }

  /** No command of this session is under way (a download being read counts as one). */
  get idle(): boolean {
    return this.busy === 0;
  }

  /**
   * Before a warm session serves another drain: a NOOP (which also takes in what the server has to
   * say since) answered within `timeoutMs`, INBOX selected again if another folder was, and the
   * per-run throttle count cleared. Throws when the session is broken.
   */
  async check(timeoutMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer to NOOP within ${timeoutMs} ms`)), timeoutMs);
    });
    const noop = this.run('NOOP', () => this.client.noop());
    // Past the timeout the session is closed, and the NOOP's own failure then is nobody's to handle.
    noop.catch(() => undefined);
    try {
      await Promise.race([noop, timeout]);
    } finally {
      clearTimeout(timer);
    }
    if (this.client.mailbox === false || this.client.mailbox.path !== 'INBOX') await this.select('INBOX');
    this.throttled = 0;
  }

  /**
   * How many mails the selected folder holds, as the server last said (EXISTS, from the SELECT or
   * the check's NOOP): no command of its own.
   */
  get exists(): number {
    const mailbox = this.client.mailbox;
    return mailbox === false ? 0 : mailbox.exists;
  }

  /** Opens a session and selects INBOX. */
  static async open(options: MailboxSessionOptions): Promise<MailboxSession> {
    const { config } = options;
    let token = await options.tokens.getToken();
    for (let attempt = 1; ; attempt++) {
      const commandErrors: CommandErrors = { last: undefined, backoffMs: undefined };
      const client = createClient(options, token.token, commandErrors);
      try {
        await client.connect();
        const session = new MailboxSession(
          client,
          config.mailbox,
          commandErrors,
          config.imap,
          token.expiresOn.getTime(),
        );
        await session.select('INBOX');
        return session;
      } catch (err) {
        client.close();
        const described = describeImapError(longBackoff(err, commandErrors), config);
        if (described.failure === 'auth' && attempt === 1) {
          options.log.warn('IMAP refused the cached token; retrying once with a new one', { mailbox: config.mailbox });
          token = await options.tokens.getToken({ forceRefresh: true });
          continue;
        }
        throw described;
      }
    }
  }

  async select(folder: string): Promise<void> {
    try {
      const opened = await this.client.mailboxOpen(folder);
      this.uidValidity = BigInt(opened.uidValidity);
    } catch (err) {
      throw describeImapError(err, { mailbox: this.mailbox, imap: this.imap }, `SELECT ${folder}`);
    }
  }

  /**
   * The mails in the selected folder, oldest first: UID, size and arrival, in one round trip
   * (FETCH 1:* (UID RFC822.SIZE INTERNALDATE)), with the sources of short mails when there are few
   * (LISTED_SOURCE_BYTES); none at all when the server's last EXISTS said the folder is empty (the
   * SELECT, or the NOOP that checked the session: mail that arrived since is the next run's).
   */
  async listMails(): Promise<MailboxEntry[]> {
    const exists = this.exists;
    if (exists === 0) return [];
    const withSources = exists <= LISTED_SOURCES_UP_TO;
    const found = new Map<number, MailboxEntry>();
    const what = `FETCH 1:* (UID RFC822.SIZE INTERNALDATE${withSources ? ` BODY.PEEK[]<0.${LISTED_SOURCE_BYTES}>` : ''})`;
    await this.run(what, async () => {
      const query = {
        uid: true,
        size: true,
        internalDate: true,
        ...(withSources ? { source: { maxLength: LISTED_SOURCE_BYTES } } : {}),
      };
      for await (const msg of this.client.fetch('1:*', query)) {
        const whole = msg.source && msg.source.length < LISTED_SOURCE_BYTES ? msg.source : undefined;
        found.set(msg.uid, {
          uid: msg.uid,
          size: msg.size ?? 0,
          internalDate: msg.internalDate ? new Date(msg.internalDate) : undefined,
          ...(whole ? { source: whole } : {}),
        });
      }
    });
    return [...found.values()].sort((a, b) => a.uid - b.uid);
  }

  /** UIDs in the selected folder, oldest first. */
  async listUids(): Promise<number[]> {
    const uids = await this.run('UID SEARCH ALL', () => this.client.search({ all: true }, { uid: true }));
    return (uids || []).sort((a, b) => a - b);
  }

  /** Header sections and sizes of several mails in one FETCH; a UID that is gone is absent. Nothing is marked read. */
  async fetchHeads(
    uids: number[],
  ): Promise<Map<number, { header: Buffer; size: number; internalDate: Date | undefined }>> {
    const out = new Map<number, { header: Buffer; size: number; internalDate: Date | undefined }>();
    if (uids.length === 0) return out;
    await this.run(`UID FETCH ${uids.length} mails (BODY.PEEK[HEADER] RFC822.SIZE)`, async () => {
      for await (const msg of this.client.fetch(
        uids.join(','),
        { uid: true, headers: true, size: true, internalDate: true },
        { uid: true },
      )) {
        out.set(msg.uid, {
          header: msg.headers ?? Buffer.alloc(0),
          size: msg.size ?? 0,
          internalDate: msg.internalDate ? new Date(msg.internalDate) : undefined,
        });
      }
    });
    return out;
  }

  /** Whole sources of several (small) mails in one FETCH (BODY.PEEK[]). */
  async fetchSources(uids: number[]): Promise<Map<number, Buffer>> {
    const out = new Map<number, Buffer>();
    if (uids.length === 0) return out;
    await this.run(`UID FETCH ${uids.length} mails (BODY.PEEK[])`, async () => {
      for await (const msg of this.client.fetch(uids.join(','), { uid: true, source: true }, { uid: true })) {
        if (msg.source) out.set(msg.uid, msg.source);
      }
    });
    return out;
  }

  /**
   * The whole message as a stream, fetched in chunks (BODY.PEEK[]<partial>), so a 150 MB mail never
   * sits in memory. The session can't run another command until the stream is consumed.
   */
  async download(uid: number): Promise<Readable> {
    for (let attempt = 1; ; attempt++) {
      const { content } = await this.run(`UID FETCH ${uid} (BODY.PEEK[])`, () =>
        this.client.download(String(uid), undefined, { uid: true, chunkSize: 1024 * 1024 }),
      );
      if (content) {
        // The stream fetches its chunks as it is read: the session is busy until it ends.
        this.busy++;
        let done = false;
        const finish = () => {
          if (done) return;
          done = true;
          this.busy--;
          this.lastActivity = Date.now();
        };
        content.once('end', finish).once('close', finish).once('error', finish);
        return content;
      }
      // imapflow answers "no such message" when it can't match the server's answers to the UID it
      // asked for (unsolicited FETCH responses after an EXPUNGE can get in the way): a NOOP takes
      // in what the server has to say, and the download is tried once more.
      if (attempt === 2) {
        throw describeImapError(
          new Error(`message UID ${uid} could not be downloaded (no data for it)`),
          { mailbox: this.mailbox, imap: this.imap },
          `UID FETCH ${uid}`,
        );
      }
      await this.run('NOOP', () => this.client.noop());
    }
  }

  /** Deletes the messages, or moves them to `folder` (created when missing), in one command. Throws when the server refuses. */
  async remove(uids: number[], action: 'move' | 'delete', folder: string): Promise<void> {
    const set = uids.join(',');
    if (!set) return;
    if (action === 'delete') {
      await this.run(`UID EXPUNGE ${set}`, () => this.checked(this.client.messageDelete(set, { uid: true })));
      return;
    }
    await this.ensureFolder(folder);
    await this.run(`UID MOVE ${set} to ${folder}`, () =>
      this.checked(this.client.messageMove(set, folder, { uid: true })),
    );
  }

  /**
   * imapflow's MOVE, EXPUNGE and STORE report a refused command by returning false, and log the
   * server's answer instead of throwing it. Unchecked, a refused MOVE would leave the mail in INBOX
   * while the ledger says it left: here it becomes the error the server gave.
   */
  private async checked<T>(result: Promise<T | false>): Promise<T> {
    this.commandErrors.last = undefined;
    const value = await result;
    if (value === false) {
      const refused = this.commandErrors.last;
      throw refused instanceof Error ? refused : new Error('the server refused the command');
    }
    return value;
  }

  /** The folders of the mailbox, lower-case: one LIST per session, and the ones this session created. */
  private async folders(): Promise<Set<string>> {
    if (!this.knownFolders) {
      const list = await this.run('LIST', () => this.client.list());
      this.knownFolders = new Set(list.map((f) => f.path.toLowerCase()));
    }
    return this.knownFolders;
  }

  private async folderExists(folder: string): Promise<boolean> {
    return (await this.folders()).has(folder.toLowerCase());
  }

  async ensureFolder(folder: string): Promise<void> {
    if (await this.folderExists(folder)) return;
    await this.run(`CREATE ${folder}`, () => this.client.mailboxCreate(folder));
    (await this.folders()).add(folder.toLowerCase());
  }

  /** Runs `work` with `folder` selected (read-only unless `write`), then gives the selection back. */
  private async inFolder<T>(folder: string, access: 'read' | 'write', work: () => Promise<T>): Promise<T> {
    const lock = await this.run(`SELECT ${folder}`, () =>
      this.client.getMailboxLock(folder, { readOnly: access === 'read' }),
    );
    try {
      return await work();
    } finally {
      lock.release();
    }
  }

  /** The mailbox's storage use and limit in bytes (imapflow converts QUOTA's KiB), when the server reports them; else undefined. */
  async storageQuota(): Promise<{ used: number; limit: number } | undefined> {
    const quota = await this.run('GETQUOTAROOT INBOX', () => this.client.getQuota('INBOX'));
    const storage = quota ? quota.storage : undefined;
    if (!storage || typeof storage.usage !== 'number' || typeof storage.limit !== 'number' || storage.limit <= 0)
      return undefined;
    return { used: storage.usage, limit: storage.limit };
  }

  /** Path of the folder with the given special use (`\Sent`), if the server marks one. */
  async specialFolder(use: '\\Sent' | '\\Trash' | '\\Junk'): Promise<string | undefined> {
    const list = await this.run('LIST', () => this.client.list());
    return list.find((f) => f.specialUse === use)?.path;
  }

  /**
   * The mailbox's Sent folder: the one the server marks `\Sent` (SPECIAL-USE), else the one
   * imapflow recognises by its name in any of some hundred languages ("Gesendete Elemente",
   * "Éléments envoyés", …); undefined when there is none.
   */
  async sentFolder(): Promise<string | undefined> {
    return this.specialFolder('\\Sent');
  }

  /** Does `folder` hold a message with this Message-ID? Used to tell whether a reply already went out. */
  async hasMessageId(folder: string, messageId: string): Promise<boolean> {
    return this.inFolder(folder, 'read', async () => (await this.uidsWithMessageId(messageId)).length > 0);
  }

  /** UIDs in the selected folder of the mails with this Message-ID. */
  private async uidsWithMessageId(messageId: string): Promise<number[]> {
    const found = await this.run('SEARCH HEADER Message-ID', () =>
      this.client.search({ header: { 'message-id': messageId } }, { uid: true }),
    );
    return found || [];
  }

  /** How many mails a folder holds (STATUS), without selecting it; undefined when it does not exist. */
  async countIn(folder: string): Promise<number | undefined> {
    if (folder.toLowerCase() !== 'inbox' && !(await this.folderExists(folder))) return undefined;
    const status = await this.run(`STATUS ${folder}`, () => this.client.status(folder, { messages: true }));
    return status ? (status.messages ?? 0) : undefined;
  }

  /**
   * UIDs in `folder` of the mail whose header section hashes to `headerSha256`: candidates found by
   * Message-ID (or, without one, by arrival day), then their header sections compared. At most
   * `maxCandidates` headers are fetched.
   */
  async findMail(
    folder: string,
    mail: { messageId: string | null; headerSha256: string; receivedAt: string },
    hash: (header: Buffer) => string,
    maxCandidates = 200,
  ): Promise<number[]> {
    return this.inFolder(folder, 'read', async () => {
      const day = 24 * 3600_000;
      const received = Date.parse(mail.receivedAt);
      const query = mail.messageId
        ? { header: { 'message-id': mail.messageId } }
        : { since: new Date(received - day), before: new Date(received + 2 * day) };
      const found = await this.run('UID SEARCH', () => this.client.search(query, { uid: true }));
      const uids = (found || []).sort((a, b) => a - b).slice(-maxCandidates);
      if (uids.length === 0) return [];
      const matches: number[] = [];
      await this.run(`UID FETCH ${uids.length} mails (BODY.PEEK[HEADER])`, async () => {
        for await (const msg of this.client.fetch(uids.join(','), { uid: true, headers: true }, { uid: true }))
          if (msg.headers && hash(msg.headers) === mail.headerSha256) matches.push(msg.uid);
      });
      return matches;
    });
  }

  /**
   * Deletes at most `max` mails of `folder` that arrived before `before` (SEARCH BEFORE, by
   * INTERNALDATE), the oldest first, and only those whose Message-ID contains `messageIdPart` when
   * given; returns how many. A folder that does not exist has none.
   */
  async deleteOlderThan(folder: string, before: Date, max: number, messageIdPart?: string): Promise<number> {
    if (!(await this.folderExists(folder))) return 0;
    return this.inFolder(folder, 'write', async () => {
      const query = { before, ...(messageIdPart ? { header: { 'message-id': messageIdPart } } : {}) };
      const found = await this.run('UID SEARCH BEFORE', () => this.client.search(query, { uid: true }));
      const uids = (found || []).sort((a, b) => a - b).slice(0, max);
      if (uids.length > 0)
        await this.run(`UID EXPUNGE ${uids.length} mails`, () =>
          this.checked(this.client.messageDelete(uids.join(','), { uid: true })),
        );
      return uids.length;
    });
  }

  /** Deletes the mails of `folder` with this Message-ID (doctor's own test mail). */
  async deleteByMessageId(folder: string, messageId: string): Promise<void> {
    await this.inFolder(folder, 'write', async () => {
      const found = await this.uidsWithMessageId(messageId);
      if (found.length > 0)
        await this.run('UID EXPUNGE', () => this.checked(this.client.messageDelete(found.join(','), { uid: true })));
    });
  }

  /** Moves one mail from `folder` to `destination` (UID MOVE); throws when the server refuses. */
  async moveBetween(folder: string, uid: number, destination: string): Promise<void> {
    await this.inFolder(folder, 'write', () =>
      this.run(`UID MOVE ${uid} to ${destination}`, () =>
        this.checked(this.client.messageMove(String(uid), destination, { uid: true })),
      ),
    );
  }

  /** Arrival time of the oldest mail in the selected folder, if any (one small FETCH). */
  async oldestArrival(): Promise<Date | undefined> {
    const uids = await this.listUids();
    if (uids.length === 0) return undefined;
    let oldest: Date | undefined;
    await this.run('UID FETCH (INTERNALDATE)', async () => {
      for await (const msg of this.client.fetch(String(uids[0]), { uid: true, internalDate: true }, { uid: true }))
        if (msg.internalDate) oldest = new Date(msg.internalDate);
    });
    return oldest;
  }

  /**
   * Runs `work` (a batch's Storage writes and parsing, which can take a while) with the session kept
   * alive: a NOOP whenever no command has gone out for KEEPALIVE_MS, so the server's or the socket's
   * idle timeout never ends a session because of one slow mail.
   */
  async keepAlive<T>(work: () => Promise<T>): Promise<T> {
    const timer = setInterval(() => {
      if (this.busy > 0 || Date.now() - this.lastActivity < KEEPALIVE_MS) return;
      this.run('NOOP', () => this.client.noop()).catch(() => {
        // The next real command reports a broken session.
      });
    }, KEEPALIVE_MS / 4);
    try {
      return await work();
    } finally {
      clearInterval(timer);
    }
  }

  async close(): Promise<void> {
    try {
      await this.client.logout();
    } catch {
      this.client.close();
    }
  }

  /** Drops the connection without a LOGOUT: for a session that no longer answers, whose LOGOUT would wait too. */
  abandon(): void {
    this.client.close();
  }

  /**
   * Runs one IMAP command. When Exchange throttles it ("Request is throttled. Suggested Backoff
   * Time: N milliseconds"), imapflow has already waited out the hint (capped at half the socket
   * timeout); the command is tried once more, and a second throttle ends the run.
   */
  private async run<T>(what: string, op: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      this.busy++;
      try {
        return await op();
      } catch (err) {
        const described = describeImapError(
          longBackoff(err, this.commandErrors),
          { mailbox: this.mailbox, imap: this.imap },
          what,
        );
        // A back-off longer than imapflow waits (Exchange has asked for minutes): the run ends, and
        // the mailbox's runs wait it out without connecting (shared/ledger/lease.ts).
        const long = (described.backoffMs ?? 0) > LONG_BACKOFF_MS;
        if (described.failure === 'throttled' && attempt < MAX_THROTTLED_ATTEMPTS && !long) {
          this.throttled++;
          continue;
        }
        throw described;
      } finally {
        this.busy--;
        this.lastActivity = Date.now();
      }
    }
  }
}

/** What imapflow's log says of a command the session can't learn from its result. */
interface CommandErrors {
  /** The server's answer to the last refused command. */
  last: unknown;
  /** A throttling back-off Exchange asked for that is longer than a run waits (LONG_BACKOFF_MS). */
  backoffMs: number | undefined;
}

/**
 * imapflow waits out a throttling hint inside the command, and a FETCH retries after the whole
 * hint, up to 5 minutes a time. A hint longer than a run waits closes the client instead (the wait
 * is aborted): the error that follows is the throttling, with the back-off asked for.
 */
function longBackoff(err: unknown, commandErrors: CommandErrors): unknown {
  if (commandErrors.backoffMs === undefined) return err;
  return Object.assign(new Error('Request is throttled', { cause: err }), {
    code: 'ETHROTTLE',
    throttleReset: commandErrors.backoffMs,
  });
}

function createClient(options: MailboxSessionOptions, accessToken: string, commandErrors: CommandErrors): ImapFlow {
  const { config } = options;
  const imapOptions: ImapFlowOptions = {
    host: config.imap.host,
    port: config.imap.port,
    secure: config.imap.secure,
    auth: { user: config.mailbox, accessToken },
    // Only to keep the server's answer to a refused command (see `checked`); nothing is printed.
    logger: {
      debug: () => {},
      info: () => {},
      warn: (entry: { err?: unknown; msg?: string; throttleDelay?: number; throttleReset?: number }) => {
        if (entry?.err) commandErrors.last = entry.err;
        const hint = entry?.msg?.startsWith('Throttling detected') ? entry.throttleDelay : undefined;
        if (typeof hint === 'number' && hint > LONG_BACKOFF_MS && commandErrors.backoffMs === undefined) {
          commandErrors.backoffMs = hint;
          setImmediate(() => client.close());
        }
      },
      error: () => {},
    },
    disableAutoIdle: true,
    connectionTimeout: options.timeoutMs ?? 30_000,
    greetingTimeout: options.timeoutMs ?? 30_000,
    // Also bounds imapflow's wait on a throttling hint (half of it): 30 s at most.
    socketTimeout: 60_000,
    ...(config.tlsCa ? { tls: { ca: config.tlsCa } } : {}),
  };
  const client = new ImapFlow(imapOptions);
  // imapflow emits 'error' on socket failures; without a listener they would crash the process.
  client.on('error', (err: Error) =>
    options.log.warn('IMAP connection error', { mailbox: config.mailbox, error: err.message }),
  );
  return client;
}

interface ImapFlowErrorFacts {
  code?: string;
  authenticationFailed?: boolean;
  serverResponseCode?: string;
  responseText?: string;
  responseStatus?: string;
  message?: string;
  throttleReset?: number;
  throttleWaited?: number;
}

/** Turns an imapflow failure into an ImapError that says what happened and what to do. */
export function describeImapError(
  err: unknown,
  config: { mailbox: string; imap: InboxqConfig['imap'] | undefined },
  during = 'login',
): ImapError {
  if (err instanceof ImapError) return err;
  const e = (err ?? {}) as ImapFlowErrorFacts;
  const server = config.imap ? `${config.imap.host}:${config.imap.port}` : 'the IMAP server';
  const text = `${e.responseText ?? ''} ${e.message ?? ''}`;
  let failure: ImapFailure;
  let message: string;
  let hint: string;
  if (e.authenticationFailed || e.serverResponseCode === 'AUTHENTICATIONFAILED' || /AUTHENTICATE failed/i.test(text)) {
    failure = 'auth';
    message = `IMAP login to ${server} was refused (AUTHENTICATE XOAUTH2 failed)`;
    hint =
      'check that IMAP is enabled for the mailbox (Get-CASMailbox <mailbox> | Format-List ImapEnabled), that the service principal is registered in Exchange with the Enterprise application object id (New-ServicePrincipal -AppId <client id> -ObjectId <enterprise app object id>), that it has FullAccess on this mailbox (Add-MailboxPermission), and that the app has IMAP.AccessAsApp with admin consent; a change just made may take a few minutes to apply. `inboxq doctor` checks each step';
  } else if (/authenticated but not connected/i.test(text)) {
    failure = 'not-connected';
    message = `IMAP login to ${server} worked but the mailbox is not accessible ("User is authenticated but not connected")`;
    hint =
      'check that IMAP is enabled for the mailbox (Get-CASMailbox <mailbox> | Format-List ImapEnabled; Set-CASMailbox <mailbox> -ImapEnabled $true), then that the service principal has FullAccess on it: Add-MailboxPermission -Identity <mailbox> -User <service principal id> -AccessRights FullAccess';
  } else if (e.code === 'ETHROTTLE' || /Request is throttled/i.test(text)) {
    failure = 'throttled';
    const backoff =
      typeof e.throttleReset === 'number' ? ` and asked to wait ${Math.round(e.throttleReset / 1000)} s` : '';
    message = `Exchange throttled the IMAP session during ${during}${backoff}`;
    hint =
      typeof e.throttleReset === 'number' && e.throttleReset > LONG_BACKOFF_MS
        ? 'the runs of this mailbox wait that long without connecting, then continue where this one stopped'
        : 'the next run continues where this one stopped; lower the schedule frequency if this persists';
  } else if (
    e.code &&
    /^(ECONNREFUSED|ENOTFOUND|EAI_AGAIN|ETIMEDOUT|ECONNRESET|EHOSTUNREACH|ENETUNREACH|EPIPE|ESOCKET|NoConnection|ETIMEOUT|CONNECT_TIMEOUT|GREETING_TIMEOUT)$/.test(
      e.code,
    )
  ) {
    failure = 'unreachable';
    if (during === 'login') {
      message = `Can't reach the IMAP server ${server} (${e.code})`;
      hint =
        'check INBOXQ_IMAP_HOST and INBOXQ_IMAP_PORT and outbound access to port 993; nothing was removed, the next run tries again';
    } else {
      message = `The connection to the IMAP server ${server} broke during ${during.length > 80 ? `${during.slice(0, 80)}…` : during} (${e.code})`;
      hint = 'nothing is lost: the mails of this batch are recorded and stay in INBOX until the next run removes them';
    }
  } else if (/self[- ]signed|unable to verify|certificate/i.test(text)) {
    failure = 'unreachable';
    message = `TLS to the IMAP server ${server} failed: the certificate is not trusted`;
    hint = 'check INBOXQ_IMAP_HOST; for a private CA set INBOXQ_TLS_CA_FILE';
  } else {
    failure = 'protocol';
    message = `IMAP ${during} failed on ${server}: ${(e.responseText || e.message || 'unknown error').slice(0, 200)}`;
    hint = 'nothing was removed; the next run tries again';
  }
  return new ImapError(message, failure, {
    mailbox: config.mailbox,
    hint,
    cause: err,
    retryable: failure !== 'auth' && failure !== 'not-connected',
    backoffMs: failure === 'throttled' && typeof e.throttleReset === 'number' ? e.throttleReset : undefined,
  });
}
