/**
 * SMTP submission with XOAUTH2 (nodemailer), as Exchange Online takes it: STARTTLS on 587, the
 * mailbox as the authenticated user and as MAIL FROM.
 *
 * nodemailer can't renew client-credentials tokens itself, so each send gets a token from the
 * TokenSource (cached by MSAL); a 535 with a cached token is retried once with a fresh one. A warm
 * instance keeps a small pool of authenticated connections per mailbox: as many as the mailbox's
 * slots allow (shared/ledger/smtp-slots.ts), all 3 while no other instance wants one.
 */
import nodemailer from 'nodemailer';
import type Mail from 'nodemailer/lib/mailer';

import type { InboxqConfig } from '../config/types';
import type { AccessToken, TokenSource } from '../credentials/token';
import { SmtpError, type SmtpFailure } from '../errors';
import { SMTP_CONNECTIONS_PER_MAILBOX, SMTP_FAIR_SHARE } from '../ledger/smtp-slots';
import type { Logger } from '../telemetry/log';

export interface SmtpSendResult {
  messageId: string;
  response: string;
}

type SmtpConfig = Pick<InboxqConfig, 'mailbox' | 'smtp' | 'tlsCa'>;

function createTransport(config: SmtpConfig, token: AccessToken, connections: number | undefined) {
  return nodemailer.createTransport({
    host: config.smtp.host,
    port: config.smtp.port,
    secure: config.smtp.port === 465,
    requireTLS: config.smtp.port !== 465,
    auth: { type: 'OAuth2', user: config.mailbox, accessToken: token.token, expires: token.expiresOn.getTime() },
    connectionTimeout: 30_000,
    greetingTimeout: 30_000,
    socketTimeout: 120_000,
    // maxRequeues 0: nodemailer would otherwise send a message again by itself when its connection
    // closes mid-send, possibly after the server took it; whether to send again is the ledger's call.
    ...(connections ? { pool: true, maxConnections: connections, maxMessages: 100, maxRequeues: 0 } : {}),
    ...(config.tlsCa ? { tls: { ca: config.tlsCa } } : {}),
  });
}

/** Connections a pool opens without slots to count them (verify, no budget). */
const POOL_CONNECTIONS = SMTP_FAIR_SHARE;
/** A pool with nothing to send for this long closes, and gives its connection slots back. */
const POOL_IDLE_MS = 10_000;
/** A surplus connection with nothing to send for this long is given back (an instance waiting for one defers 2 s at least). */
const SURPLUS_IDLE_MS = 1_000;
/** How often a pool holding more than its fair share asks whether another instance waits for a slot (a read; a waiting instance defers 2 s at least). */
const WANT_CHECK_MS = 500;

type Transport = ReturnType<typeof createTransport>;

/**
 * The mailbox's SMTP connections shared with every other instance (shared/ledger/smtp-slots.ts):
 * a pool opens only as many connections as it holds slots for.
 */
export interface ConnectionBudget {
  /** Takes up to `want` slots, past `fairShare` only while no other instance wants one; how many are held (0: every slot is in use elsewhere). */
  acquire(want: number, fairShare?: number): Promise<number>;
  /** Keeps the slots held; how many are still held. */
  renew(): Promise<number>;
  /** Whether another instance waits for a slot. */
  othersWant(): Promise<boolean>;
  /** Gives back the slots held past the first `keep`. */
  releaseBeyond(keep: number): Promise<void>;
  release(): Promise<void>;
}

/** A nodemailer pool of some connections, and the sends under way on it. */
interface Lane {
  transport: Transport;
  connections: number;
  busy: number;
}

interface Pool {
  key: string;
  token: string;
  /** The fair share of connections (or fewer, when the slots allowed fewer). */
  lane: Lane;
  /** A connection past the fair share, while no other instance wants it and it has work; `retiring` once not. */
  surplus?: Lane & { retiring: boolean; idle?: NodeJS.Timeout };
  budget: ConnectionBudget | undefined;
  wantCheckedAt: number;
  idle?: NodeJS.Timeout;
}

const busyOf = (pool: Pool) => pool.lane.busy + (pool.surplus?.busy ?? 0);

/** The lane a send goes on: the one with fewer sends per connection, never a retiring surplus. */
function laneFor(pool: Pool): Lane {
  const s = pool.surplus;
  if (!s || s.retiring) return pool.lane;
  return s.busy * pool.lane.connections < pool.lane.busy ? s : pool.lane;
}

/** The surplus connection, once its send is done (or now): closed and its slot given back. */
function retireSurplus(pool: Pool): void {
  const s = pool.surplus;
  if (!s) return;
  s.retiring = true;
  clearTimeout(s.idle);
  if (s.busy > 0) return;
  pool.surplus = undefined;
  s.transport.close();
  void pool.budget?.releaseBeyond(pool.lane.connections).catch(() => undefined);
}

/** While a pool holds a surplus: every WANT_CHECK_MS, whether another instance waits for it (never awaited by a send). */
function checkSurplus(pool: Pool): void {
  if (!pool.surplus || pool.surplus.retiring || !pool.budget) return;
  if (Date.now() - pool.wantCheckedAt < WANT_CHECK_MS) return;
  pool.wantCheckedAt = Date.now();
  pool.budget.othersWant().then(
    (wanted) => wanted && retireSurplus(pool),
    () => undefined,
  );
}

/**
 * One pooled transport per mailbox and server in a warm instance, so replies don't pay TLS, EHLO,
 * STARTTLS and AUTH each time. It is replaced when the token changes, closed when idle, and dropped
 * after a failure of the connection or the login (a refusal of one message keeps it: the other
 * messages waiting in it would otherwise fail with it).
 */
const pools = new Map<string, Pool>();

function closeTransports(pool: Pool): void {
  if (pools.get(pool.key) === pool) pools.delete(pool.key);
  clearTimeout(pool.idle);
  clearTimeout(pool.surplus?.idle);
  pool.lane.transport.close();
  pool.surplus?.transport.close();
  pool.surplus = undefined;
}

function closePool(pool: Pool): void {
  closeTransports(pool);
  void pool.budget?.release();
}

/** Closes every pool of this process and gives its connection slots back (an instance shutting down, a benchmark). */
export async function closeSmtpPools(): Promise<void> {
  const all = [...pools.values()];
  for (const pool of all) closeTransports(pool);
  await Promise.all(all.map((pool) => pool.budget?.release() ?? Promise.resolve()));
}

/** Pools being opened (their slots taken), so concurrent sends of one instance share one. */
const opening = new Map<string, Promise<Pool>>();

async function pooledTransport(
  config: SmtpConfig,
  token: AccessToken,
  budget: ConnectionBudget | undefined,
): Promise<Pool> {
  const key = `${config.smtp.host}:${config.smtp.port}|${config.mailbox}`;
  const pending = opening.get(key);
  if (pending) {
    const pool = await pending;
    if (pool.token === token.token && pools.get(key) === pool) return pool;
  }
  const current = pools.get(key);
  if (current && current.token === token.token && (!current.budget || (await current.budget.renew()) > 0))
    return current;
  if (opening.has(key)) return pooledTransport(config, token, budget);
  const open = (async (): Promise<Pool> => {
    if (current) closePool(current);
    const connections = budget ? await budget.acquire(SMTP_CONNECTIONS_PER_MAILBOX, SMTP_FAIR_SHARE) : POOL_CONNECTIONS;
    if (connections === 0) throw connectionsInUse(config);
    const share = Math.min(connections, SMTP_FAIR_SHARE);
    const lane = (n: number): Lane => ({ transport: createTransport(config, token, n), connections: n, busy: 0 });
    const pool: Pool = {
      key,
      token: token.token,
      lane: lane(share),
      ...(connections > share ? { surplus: { ...lane(connections - share), retiring: false } } : {}),
      budget,
      wantCheckedAt: Date.now(),
    };
    // An idle pooled connection the server drops reports an error with no send waiting: forget the pool.
    for (const l of [pool.lane, pool.surplus]) l?.transport.on('error', () => closePool(pool));
    pools.set(key, pool);
    return pool;
  })();
  opening.set(key, open);
  try {
    return await open;
  } finally {
    opening.delete(key);
  }
}

function connectionsInUse(config: SmtpConfig): SmtpError {
  return new SmtpError(
    `all ${SMTP_CONNECTIONS_PER_MAILBOX} SMTP connections of ${config.mailbox} are in use by other instances`,
    'busy',
    undefined,
    {
      mailbox: config.mailbox,
      hint: 'nothing was sent; the reply waits a few seconds for a connection',
      retryable: true,
      notSent: true,
    },
  );
}

/** Failures after which a pool is not used again: its connections or its token are no good. */
function dropsPool(err: SmtpError): boolean {
  return err.failure === 'auth' || err.failure === 'auth-disabled' || err.failure === 'unreachable';
}

/**
 * Runs `use` on a transport; when the server refuses a cached token (535), once more with a token
 * fetched past MSAL's cache; when the pool was closed under a message (it was never sent), once
 * more on a new pool. `budget` (pooled sends) bounds the connections across instances.
 */
async function withTransport<T>(
  config: SmtpConfig,
  tokens: TokenSource,
  log: Logger,
  pooled: { budget: ConnectionBudget | undefined } | false,
  use: (t: Transport) => Promise<T>,
): Promise<T> {
  let token = await tokens.getToken();
  for (let attempt = 1; ; attempt++) {
    const pool = pooled ? await pooledTransport(config, token, pooled.budget) : undefined;
    const lane = pool ? laneFor(pool) : undefined;
    const transport = lane ? lane.transport : createTransport(config, token, undefined);
    if (pool && lane) {
      lane.busy++;
      clearTimeout(pool.idle);
      if (lane === pool.surplus) clearTimeout(pool.surplus.idle);
    }
    try {
      return await use(transport);
    } catch (err) {
      const described = describeSmtpError(err, config);
      if (pool && dropsPool(described)) closePool(pool);
      if (described.failure === 'auth' && attempt === 1) {
        log.warn('SMTP refused the cached token; retrying once with a new one', { mailbox: config.mailbox });
        token = await tokens.getToken({ forceRefresh: true });
        continue;
      }
      if (described.poolClosed && attempt < 3) continue;
      throw described;
    } finally {
      if (!pool || !lane) transport.close();
      else {
        lane.busy--;
        const surplus = pool.surplus;
        if (lane === surplus && (surplus.retiring || surplus.busy === 0)) {
          if (surplus.retiring) retireSurplus(pool);
          else {
            surplus.idle = setTimeout(() => retireSurplus(pool), SURPLUS_IDLE_MS);
            surplus.idle.unref();
          }
        }
        checkSurplus(pool);
        if (busyOf(pool) === 0 && pools.get(pool.key) === pool) {
          pool.idle = setTimeout(() => closePool(pool), POOL_IDLE_MS);
          pool.idle.unref();
        }
      }
    }
  }
}

/**
 * Sends one mail. `message` may be a function that composes it: called for each attempt (a retry
 * with a new token, or after a closed pool), so attachments given as streams are read afresh.
 */
export async function sendMail(
  config: SmtpConfig,
  tokens: TokenSource,
  message: Mail.Options | (() => Mail.Options),
  log: Logger,
  budget?: ConnectionBudget,
): Promise<SmtpSendResult> {
  return withTransport(config, tokens, log, { budget }, async (transport) => {
    const info = await transport.sendMail(typeof message === 'function' ? message() : message);
    return { messageId: info.messageId, response: String(info.response ?? '').slice(0, 200) };
  });
}

/** Connects, STARTTLS, AUTH XOAUTH2, QUIT: proves the mailbox may send, without sending. */
export async function verifySmtp(config: SmtpConfig, tokens: TokenSource, log: Logger): Promise<void> {
  await withTransport(config, tokens, log, false, async (transport) => {
    await transport.verify();
  });
}

interface NodemailerErrorFacts {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  message?: string;
}

export function describeSmtpError(err: unknown, config: SmtpConfig): SmtpError {
  if (err instanceof SmtpError) return err;
  const e = (err ?? {}) as NodemailerErrorFacts;
  const server = `${config.smtp.host}:${config.smtp.port}`;
  const response = (e.response ?? '').replace(/[\r\n]+/g, ' ').slice(0, 200);
  const code = e.responseCode;
  let failure: SmtpFailure;
  let message: string;
  let hint: string;
  let notSent = false;
  let poolClosed = false;
  if (code === 432 || /\b4\.3\.2\b/.test(response)) {
    // Exchange Online: more than 3 concurrent SMTP AUTH connections for the mailbox, at AUTH or DATA.
    failure = 'busy';
    message = `${server} refused another concurrent connection for ${config.mailbox} (${response || code})`;
    hint = 'nothing was sent; the reply waits a few seconds for a connection';
  } else if (/Connection pool was closed/i.test(e.message ?? '')) {
    failure = 'transient';
    message = `the SMTP connection pool to ${server} was closed before the reply went out`;
    hint = 'nothing was sent; the reply is sent again at once';
    notSent = true;
    poolClosed = true;
  } else if (/SubmissionQuotaExceeded/i.test(response) || (code === 550 && /\b5\.2\.25[13-5]\b/.test(response))) {
    // The daily recipient limit (554 5.2.0 …SubmissionQuotaExceeded), or continuous-error throttling (550 5.2.25x).
    failure = 'throttled';
    message = `Exchange stopped ${config.mailbox} from sending for now (${response || code})`;
    hint = 'nothing was sent; replies wait on the queue until Exchange lets the mailbox send again';
  } else if (/QuotaExceededException|5\.2\.2\b/.test(response)) {
    failure = 'throttled';
    message = `the mailbox ${config.mailbox} is full (${response || code})`;
    hint = 'nothing was sent; free space in the mailbox (its Sent Items and inboxq folders) and the replies go out';
  } else if (/5\.7\.139/.test(response)) {
    failure = 'auth-disabled';
    message = `SMTP AUTH is disabled for ${config.mailbox} on ${server} (535 5.7.139)`;
    hint = `enable it for the mailbox: Set-CASMailbox -Identity ${config.mailbox} -SmtpClientAuthenticationDisabled $false (the mailbox's setting is enough; leave it off for the rest of the tenant)`;
  } else if (code === 535 || e.code === 'EAUTH') {
    failure = 'auth';
    message = `SMTP login to ${server} was refused (${response || 'authentication failed'})`;
    hint =
      'check that the app has SMTP.SendAsApp with admin consent and that its service principal has FullAccess on this mailbox; `inboxq doctor` checks each step';
  } else if (/5\.2\.252|SendAsDenied/i.test(response)) {
    failure = 'send-as-denied';
    message = `${server} refused to send as ${config.mailbox} (554 5.2.252 SendAsDenied)`;
    hint = 'the From address must be the authenticated mailbox itself; check INBOXQ_MAILBOX';
  } else if (code !== undefined && code >= 400 && code < 500) {
    failure = 'transient';
    message = `${server} deferred the reply (${response || code})`;
    hint = 'the reply is retried later; nothing was sent twice';
  } else if (
    e.code &&
    /^(ECONNECTION|ETIMEDOUT|ESOCKET|EDNS|ECONNREFUSED|ECONNRESET|EPROTOCOL)$/.test(e.code) &&
    code === undefined
  ) {
    failure = 'unreachable';
    message = `Can't reach the SMTP server ${server} (${e.code})`;
    hint = 'check INBOXQ_SMTP_HOST and INBOXQ_SMTP_PORT and outbound access to port 587; the reply is retried later';
  } else {
    failure = 'rejected';
    message = `${server} rejected the reply (${response || e.code || 'error'})`;
    hint = 'the reply ends in the poison queue after the configured retries';
  }
  return new SmtpError(message, failure, code, {
    mailbox: config.mailbox,
    hint,
    cause: err,
    retryable: failure === 'transient' || failure === 'unreachable' || failure === 'busy' || failure === 'throttled',
    command: e.command,
    notSent,
    poolClosed,
  });
}
