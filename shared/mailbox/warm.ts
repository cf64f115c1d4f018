/**
 * A warm instance keeps its IMAP session to a mailbox between drains (INBOXQ_IMAP_KEEP_WARM_SECONDS),
 * so a short schedule costs a NOOP per tick instead of a TLS handshake, an XOAUTH2 login and a
 * SELECT: fewer logins also keep clear of Exchange's connection churn ("User is authenticated but
 * not connected") and of its concurrent-connection limit per mailbox.
 *
 * - One idle session per mailbox per instance, owned by whoever checked it out: a drain takes it
 *   out of the holder, so two overlapping invocations never share one (the second opens its own,
 *   and only one of the two is kept afterwards).
 * - A session is checked before it is used again: the connection still up, a NOOP answered within
 *   a few seconds, and its token not about to expire (Exchange Online ends an IMAP session when the
 *   token it logged in with expires). Any doubt, and a new session is opened.
 * - A drain that failed closes its session rather than give it back; an idle one is closed after
 *   the keep-warm time.
 */
import { ImapError } from '../errors';
import type { Logger } from '../telemetry/log';
import type { MailboxSession } from './imap';

/** A session whose token expires within this is not used again: a run must finish before it does. */
export const TOKEN_MARGIN_MS = 10 * 60_000;
const TOKEN_EXPIRES = 'its token expires soon';

/** How long the check of an idle session may take before it counts as broken. */
export const CHECK_TIMEOUT_MS = 5_000;

/** A session checked this recently (a `look` just before the drain that follows) is used without another NOOP. */
const FRESH_MS = 2_000;

export class WarmSession {
  private idle: { session: MailboxSession; timer: NodeJS.Timeout; checkedAt: number } | undefined;
  /** Sessions reused and opened, for tests and the benchmark. */
  readonly stats = { reused: 0, opened: 0, discarded: 0 };

  constructor(
    private readonly keepWarmMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get enabled(): boolean {
    return this.keepWarmMs > 0;
  }

  /**
   * The idle session if it passes its check (skipped when a `look` checked it a moment ago, unless
   * `trustRecentCheck` is false), else a new one from `open`; the caller owns it until checkin.
   */
  async checkout(open: () => Promise<MailboxSession>, log: Logger, trustRecentCheck = true): Promise<MailboxSession> {
    const idle = this.idle;
    this.idle = undefined;
    if (idle) {
      clearTimeout(idle.timer);
      const fresh = trustRecentCheck && this.now() - idle.checkedAt < FRESH_MS;
      const why = fresh && idle.session.usable ? null : await this.unusable(idle.session);
      if (!why) {
        this.stats.reused++;
        return idle.session;
      }
      this.stats.discarded++;
      log.info(`The warm IMAP session is not used again (${why}); a new one is opened`, {
        mailbox: idle.session.mailbox,
      });
      // A session that still answers is logged out; a broken one is dropped (its LOGOUT would hang too).
      if (why === TOKEN_EXPIRES) await idle.session.close();
      else idle.session.abandon();
    }
    this.stats.opened++;
    return open();
  }

  /**
   * Gives the session back after a drain: kept when it served well, closed otherwise. A session
   * still carrying a command is not kept: the next drain's check would wait behind it.
   */
  async checkin(session: MailboxSession, healthy: boolean, checkedAt = 0): Promise<void> {
    if (!this.enabled || !healthy || !session.usable || !session.idle) {
      await session.close();
      return;
    }
    // Two overlapping drains each opened one: the one given back last is kept, the other closed.
    const previous = this.idle;
    const timer = setTimeout(() => {
      if (this.idle?.session !== session) return;
      this.idle = undefined;
      void session.close();
    }, this.keepWarmMs);
    timer.unref();
    this.idle = { session, timer, checkedAt };
    if (previous) {
      clearTimeout(previous.timer);
      await previous.session.close();
    }
  }

  /**
   * How many mails INBOX holds: the kept session checked (its NOOP takes in new mail), or a new one
   * opened, all within `timeoutMs`. The session is given back as checked, so the drain that may
   * follow uses it without another NOOP. Throws what the check or the login threw, or an
   * ImapError (unreachable) past the timeout; a session that turns up after it is dropped.
   */
  async look(open: () => Promise<MailboxSession>, log: Logger, timeoutMs: number, mailbox: string): Promise<number> {
    // Always a NOOP: it is what tells of new mail.
    const checking = this.checkout(open, log, false);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new ImapError(`The IMAP server did not answer within ${timeoutMs / 1000} s`, 'unreachable', {
              mailbox,
              hint: 'nothing was read; the drain function takes the mailbox until the server answers again',
              retryable: true,
            }),
          ),
        timeoutMs,
      );
    });
    let session: MailboxSession;
    try {
      session = await Promise.race([checking, timeout]);
    } catch (err) {
      // Whatever the check still opens is nobody's: dropped when it comes.
      checking.then(
        (late) => late.abandon(),
        () => undefined,
      );
      throw err;
    } finally {
      clearTimeout(timer);
    }
    const count = session.exists;
    await this.checkin(session, true, this.now());
    return count;
  }

  /** Closes the idle session (the host stopping). */
  async close(): Promise<void> {
    const idle = this.idle;
    this.idle = undefined;
    if (!idle) return;
    clearTimeout(idle.timer);
    await idle.session.close();
  }

  /** Why the idle session can't be used again, or null when it can. */
  private async unusable(session: MailboxSession): Promise<string | null> {
    if (!session.usable) return 'the connection was closed';
    if (session.tokenExpiresAt - this.now() < TOKEN_MARGIN_MS) return TOKEN_EXPIRES;
    try {
      await session.check(CHECK_TIMEOUT_MS);
      return null;
    } catch (err) {
      return `NOOP failed: ${(err as Error).message.slice(0, 200)}`;
    }
  }
}
