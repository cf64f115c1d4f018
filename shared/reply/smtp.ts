/**
 * SMTP submission with XOAUTH2 (nodemailer), as Exchange Online takes it: STARTTLS on 587, the
 * mailbox as the authenticated user and as MAIL FROM.
 *
 * nodemailer can't renew client-credentials tokens itself, so each send gets a token from the
 * TokenSource (cached by MSAL); a 535 with a cached token is retried once with a fresh one. A warm
 * instance keeps a small pool of authenticated connections per mailbox.
 */
import nodemailer from 'nodemailer';
import type Mail from 'nodemailer/lib/mailer';

import type { InboxqConfig } from '../config/types';
import type { AccessToken, TokenSource } from '../credentials/token';
import { SmtpError, type SmtpFailure } from '../errors';
import type { Logger } from '../telemetry/log';

export interface SmtpSendResult {
  messageId: string;
  response: string;
}

type SmtpConfig = Pick<InboxqConfig, 'mailbox' | 'smtp' | 'tlsCa'>;

function createTransport(config: SmtpConfig, token: AccessToken, pooled: boolean) {
  return nodemailer.createTransport({
    host: config.smtp.host,
    port: config.smtp.port,
    secure: config.smtp.port === 465,
    requireTLS: config.smtp.port !== 465,
    auth: { type: 'OAuth2', user: config.mailbox, accessToken: token.token, expires: token.expiresOn.getTime() },
    connectionTimeout: 30_000,
    greetingTimeout: 30_000,
    socketTimeout: 120_000,
    ...(pooled ? { pool: true, maxConnections: POOL_CONNECTIONS, maxMessages: 100 } : {}),
    ...(config.tlsCa ? { tls: { ca: config.tlsCa } } : {}),
  });
}

/** Connections a warm instance keeps open per mailbox (Exchange Online limits concurrent SMTP connections per mailbox). */
const POOL_CONNECTIONS = 2;

type Transport = ReturnType<typeof createTransport>;

/**
 * One pooled transport per mailbox and server in a warm instance, so replies don't pay TLS, EHLO,
 * STARTTLS and AUTH each time. It is replaced when the token changes, and dropped after an error.
 */
const pools = new Map<string, { token: string; transport: Transport }>();

function pooledTransport(config: SmtpConfig, token: AccessToken): Transport {
  const key = `${config.smtp.host}:${config.smtp.port}|${config.mailbox}`;
  const current = pools.get(key);
  if (current && current.token === token.token) return current.transport;
  current?.transport.close();
  const transport = createTransport(config, token, true);
  // An idle pooled connection the server drops reports an error with no send waiting: forget the pool.
  transport.on('error', () => dropPooledTransport(config, transport));
  pools.set(key, { token: token.token, transport });
  return transport;
}

function dropPooledTransport(config: SmtpConfig, transport: Transport): void {
  const key = `${config.smtp.host}:${config.smtp.port}|${config.mailbox}`;
  if (pools.get(key)?.transport === transport) pools.delete(key);
  transport.close();
}

/**
 * Runs `use` on a transport; when the server refuses a cached token (535), once more with a token
 * fetched past MSAL's cache. `pooled` keeps the transport for the next call.
 */
async function withTransport<T>(
  config: SmtpConfig,
  tokens: TokenSource,
  log: Logger,
  pooled: boolean,
  use: (t: Transport) => Promise<T>,
): Promise<T> {
  let token = await tokens.getToken();
  for (let attempt = 1; ; attempt++) {
    const transport = pooled ? pooledTransport(config, token) : createTransport(config, token, false);
    try {
      const result = await use(transport);
      if (!pooled) transport.close();
      return result;
    } catch (err) {
      if (pooled) dropPooledTransport(config, transport);
      else transport.close();
      const described = describeSmtpError(err, config);
      if (described.failure === 'auth' && attempt === 1) {
        log.warn('SMTP refused the cached token; retrying once with a new one', { mailbox: config.mailbox });
        token = await tokens.getToken({ forceRefresh: true });
        continue;
      }
      throw described;
    }
  }
}

export async function sendMail(
  config: SmtpConfig,
  tokens: TokenSource,
  message: Mail.Options,
  log: Logger,
): Promise<SmtpSendResult> {
  return withTransport(config, tokens, log, true, async (transport) => {
    const info = await transport.sendMail(message);
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
  if (/5\.7\.139/.test(response)) {
    failure = 'auth-disabled';
    message = `SMTP AUTH is disabled for ${config.mailbox} on ${server} (535 5.7.139)`;
    hint = `enable it for the mailbox: Set-CASMailbox -Identity ${config.mailbox} -SmtpClientAuthenticationDisabled $false (and check the tenant: Set-TransportConfig -SmtpClientAuthenticationDisabled $false; security defaults turn it off)`;
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
    retryable: failure === 'transient' || failure === 'unreachable',
    command: e.command,
  });
}
