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
import type { Logger } from '../telemetry/log';
import type { MailboxSession } from './imap';

/** A session whose token expires within this is not used again: a run must finish before it does. */
export const TOKEN_MARGIN_MS = 10 * 60_000;
const TOKEN_EXPIRES = 'its token expires soon';

/** How long the check of an idle session may take before it counts as broken. */
export const CHECK_TIMEOUT_MS = 5_000;

export class WarmSession {
  private idle: { session: MailboxSession; timer: NodeJS.Timeout } | undefined;
  /** Sessions reused and opened, for tests and the benchmark. */
  readonly stats = { reused: 0, opened: 0, discarded: 0 };

  constructor(
    private readonly keepWarmMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  get enabled(): boolean {
    return this.keepWarmMs > 0;
  }

  /** The idle session if it passes its check, else a new one from `open`; the caller owns it until checkin. */
  async checkout(open: () => Promise<MailboxSession>, log: Logger): Promise<MailboxSession> {
    const idle = this.idle;
    this.idle = undefined;
    if (idle) {
      clearTimeout(idle.timer);
      const why = await this.unusable(idle.session);
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
  async checkin(session: MailboxSession, healthy: boolean): Promise<void> {
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
    this.idle = { session, timer };
    if (previous) {
      clearTimeout(previous.timer);
      await previous.session.close();
    }
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
