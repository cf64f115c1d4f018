/**
 * An SMTP submission server that behaves like Exchange Online's smtp.office365.com:587 for inboxq:
 * STARTTLS required, AUTH XOAUTH2 only, each token verified (signature, issuer, audience, expiry,
 * the SMTP.SendAsApp role, or an RBAC for Applications assignment of the app to the mailbox: the
 * route Microsoft's "SMTP Onboarding to App RBAC" describes, where the token carries no such role),
 * MAIL FROM must be the authenticated mailbox (554 5.2.252 SendAsDenied).
 * Accepted mail is delivered into Dovecot over LMTP, to each recipient and, like Exchange's Sent
 * Items copy of SMTP AUTH submissions, to the sender's Sent folder.
 */
import type { AddressInfo } from 'node:net';

import nodemailer, { type Transporter } from 'nodemailer';
import { SMTPServer, type SMTPServerAuthentication, type SMTPServerSession } from 'smtp-server';

import type { Certificates } from './certs';
import { EXCHANGE_AUDIENCE, type IdentityProvider } from './idp';

export interface AcceptedMail {
  from: string;
  to: string[];
  messageId: string | undefined;
  raw: Buffer;
}

const CONCURRENCY_REFUSAL =
  '4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information.';

function smtpError(code: number, text: string): Error {
  const err = new Error(text) as Error & { responseCode: number };
  err.responseCode = code;
  return err;
}

export class LocalSmtpServer {
  port = 0;
  readonly accepted: AcceptedMail[] = [];
  readonly authFailures: string[] = [];
  /** Mailboxes for which SMTP AUTH is disabled (535 5.7.139, as Set-CASMailbox would make it). */
  readonly smtpAuthDisabled = new Set<string>();
  /**
   * RBAC for Applications: app (client id) -> the mailboxes it may send as without the SMTP.SendAsApp
   * role in its token (New-ManagementRoleAssignment -Role "Application SMTP.SendAsApp" with a scope).
   */
  readonly appRbac = new Map<string, Set<string>>();
  /**
   * Per sending mailbox, how its Sent copy is kept: 'none' (a server that keeps no copy) or a delay
   * in ms (a copy that comes late). Absent: at once, as Exchange Online does.
   */
  readonly sentCopy = new Map<string, 'none' | number>();
  /**
   * Exchange Online's limit of concurrent SMTP AUTH connections per mailbox: an authenticated
   * connection beyond it gets `432 4.3.2 Concurrent connections limit exceeded` at the end of DATA
   * (or at AUTH, `limitAnsweredAt: 'auth'`) and is closed. 0 switches it off.
   */
  connectionLimit = 3;
  limitAnsweredAt: 'data' | 'auth' = 'data';
  /** Refusals given under the limit, and the most authenticated connections one mailbox had at once. */
  readonly limitRefusals: { mailbox: string; at: 'data' | 'auth' }[] = [];
  readonly peakConnections = new Map<string, number>();
  /** Successful AUTH XOAUTH2 logins so far, by mailbox: each is a new connection. */
  readonly logins = new Map<string, number>();
  /** Authenticated connections open now, by session id. */
  private readonly authenticated = new Map<string, string>();
  /** Answers given to DATA before accepting, one per message, e.g. [{ code: 451, text: '4.3.0 try later' }]. */
  readonly dataFaults: { code: number; text: string }[] = [];
  private server: SMTPServer | undefined;
  private lmtp: Transporter | undefined;

  constructor(
    private readonly idp: IdentityProvider,
    private readonly delivery: { lmtpPort: number },
  ) {}

  async start(certs: Certificates): Promise<void> {
    this.lmtp = nodemailer.createTransport({
      lmtp: true,
      host: '127.0.0.1',
      port: this.delivery.lmtpPort,
      tls: { ca: certs.ca },
    } as never);
    this.server = new SMTPServer({
      secure: false,
      key: certs.key,
      cert: certs.cert,
      name: 'smtp.local.inboxq',
      banner: 'Microsoft ESMTP MAIL Service ready (inboxq local stack)',
      authMethods: ['XOAUTH2'],
      allowInsecureAuth: false,
      size: 160 * 1024 * 1024,
      logger: false,
      // On stop, end idle connections (inboxq keeps a pool open) at once instead of after 30 s.
      closeTimeout: 100,
      onAuth: (auth, session, callback) => {
        this.authenticate(auth, session).then(
          (user) => {
            if (
              this.connectionLimit > 0 &&
              this.limitAnsweredAt === 'auth' &&
              this.connectionsOf(user) >= this.connectionLimit
            ) {
              this.limitRefusals.push({ mailbox: user, at: 'auth' });
              this.closeSoon(session.id);
              return callback(smtpError(432, CONCURRENCY_REFUSAL));
            }
            this.authenticated.set(session.id, user);
            this.logins.set(user, (this.logins.get(user) ?? 0) + 1);
            this.peakConnections.set(user, Math.max(this.peakConnections.get(user) ?? 0, this.connectionsOf(user)));
            callback(null, { user });
          },
          (err: Error) => {
            this.authFailures.push(err.message);
            callback(err);
          },
        );
      },
      onMailFrom: (address, session, callback) => {
        if (address.address.toLowerCase() !== String(session.user).toLowerCase()) {
          return callback(
            smtpError(554, `5.2.252 SendAsDenied; ${session.user} not allowed to send as ${address.address}`),
          );
        }
        callback();
      },
      onClose: (session) => {
        this.authenticated.delete(session.id);
      },
      onData: (stream, session, callback) => {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          const user = String(session.user ?? '');
          if (
            this.connectionLimit > 0 &&
            this.limitAnsweredAt === 'data' &&
            this.connectionsOf(user) > this.connectionLimit
          ) {
            this.limitRefusals.push({ mailbox: user, at: 'data' });
            this.closeSoon(session.id);
            return callback(smtpError(432, CONCURRENCY_REFUSAL));
          }
          const fault = this.dataFaults.shift();
          if (fault) return callback(smtpError(fault.code, fault.text));
          const raw = Buffer.concat(chunks);
          this.deliver(session, raw).then(
            () => callback(),
            (err: Error) => callback(smtpError(451, `4.4.0 delivery to the mailbox store failed: ${err.message}`)),
          );
        });
      },
    });
    this.server.on('error', () => {});
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.server.address() as AddressInfo).port;
  }

  private connectionsOf(user: string): number {
    let n = 0;
    for (const u of this.authenticated.values()) if (u === user) n++;
    return n;
  }

  /** Closes a connection after its answer went out, as Exchange does after a 432. */
  private closeSoon(sessionId: string): void {
    setTimeout(() => {
      const connections = (this.server as unknown as { connections: Set<{ id: string; close: () => void }> })
        .connections;
      for (const c of connections) if (c.id === sessionId) c.close();
    }, 20);
  }

  private async authenticate(auth: SMTPServerAuthentication, _session: SMTPServerSession): Promise<string> {
    const user = (auth.username ?? '').toLowerCase();
    if (this.smtpAuthDisabled.has(user)) {
      throw smtpError(
        535,
        '5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Mailbox.',
      );
    }
    let claims: Record<string, unknown>;
    try {
      claims = await this.idp.verify(auth.accessToken ?? '', EXCHANGE_AUDIENCE);
    } catch {
      throw smtpError(535, '5.7.3 Authentication unsuccessful');
    }
    const roles = Array.isArray(claims['roles']) ? (claims['roles'] as string[]) : [];
    const appid = typeof claims['appid'] === 'string' ? claims['appid'].toLowerCase() : '';
    const byRbac = this.appRbac.get(appid)?.has(user) ?? false;
    if (!roles.includes('SMTP.SendAsApp') && !byRbac) throw smtpError(535, '5.7.3 Authentication unsuccessful');
    return user;
  }

  private async deliver(session: SMTPServerSession, raw: Buffer): Promise<void> {
    const from = String(session.envelope.mailFrom ? session.envelope.mailFrom.address : '');
    const to = session.envelope.rcptTo.map((r) => r.address);
    const sentCopy = `${from.replace('@', '+Sent@')}`;
    const copy = this.sentCopy.get(from.toLowerCase());
    await this.lmtp!.sendMail({ envelope: { from, to: copy === undefined ? [...to, sentCopy] : to }, raw });
    if (typeof copy === 'number')
      setTimeout(() => {
        this.lmtp!.sendMail({ envelope: { from, to: [sentCopy] }, raw }).catch(() => undefined);
      }, copy).unref();
    const messageId = /^message-id:\s*(<[^>]+>)/im.exec(raw.toString('utf8', 0, Math.min(raw.length, 64 * 1024)))?.[1];
    this.accepted.push({ from, to, messageId, raw });
  }

  async stop(): Promise<void> {
    if (this.server) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.lmtp?.close();
    this.server = undefined;
  }
}
