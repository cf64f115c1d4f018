/**
 * The warm IMAP session (INBOXQ_IMAP_KEEP_WARM_SECONDS, shared/mailbox/warm.ts) against Dovecot,
 * through a proxy that counts connections and can cut them: a second tick reuses the session (no
 * new login); a server-side disconnect between ticks, a token about to expire or a failed drain
 * make the next tick log in again, with nothing lost; overlapping invocations never share one.
 */
import { describe, expect, it } from 'vitest';

import { runtimeFor } from '../../localstack/runtime';
import { drainMailbox } from '../../shared/drain/drain';
import { MailboxSession } from '../../shared/mailbox/imap';
import { TOKEN_MARGIN_MS } from '../../shared/mailbox/warm';
import { memoryLogger } from '../../shared/telemetry/log';
import { useProxiedStack } from '../helpers/imap-proxy';
import { buildMail } from '../helpers/mail';

const SENDER = 'wanda@partner.test';
const local = useProxiedStack();

function setup(mailbox: string, options: { keepWarmMs?: number; now?: () => number } = {}) {
  const rt = runtimeFor(
    local.stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: SENDER, INBOXQ_IMAP_PORT: String(local.proxy.port) }),
  );
  const warm = local.warmSession(options.keepWarmMs ?? 60_000, options.now);
  const log = memoryLogger();
  const drain = () => drainMailbox({ ...rt, imapSession: warm, log });
  const mail = (subject: string) => local.stack.appendMail(mailbox, buildMail({ from: SENDER, to: mailbox, subject }));
  return { rt, warm, log, drain, mail };
}

describe('a warm IMAP session', () => {
  it('serves the next tick with a NOOP instead of a new connection and login', async () => {
    const { warm, drain, mail } = setup('warm-reuse@company.test');
    const before = local.proxy.connections;
    await mail('One');
    expect((await drain()).counts.queued).toBe(1);
    await mail('Two');
    expect((await drain()).counts.queued).toBe(1);
    expect((await drain()).counts.seen).toBe(0);
    expect(local.proxy.connections - before).toBe(1);
    expect(warm.stats).toEqual({ opened: 1, reused: 2, discarded: 0 });
  });

  it('on an empty INBOX, a run sends nothing past its NOOP: the EXISTS the NOOP took in says there is nothing to list', async () => {
    const { drain, mail } = setup('warm-empty@company.test');
    await mail('One');
    expect((await drain()).counts.queued).toBe(1);
    const before = local.proxy.commands.length;
    expect((await drain()).counts.seen).toBe(0);
    expect(local.proxy.commands.slice(before)).toEqual(['NOOP']);
    // Mail that arrived is seen by the NOOP, then listed in one command and fetched.
    await mail('Two');
    const next = local.proxy.commands.length;
    expect((await drain()).counts.queued).toBe(1);
    const [check, listing] = local.proxy.commands.slice(next, next + 2);
    expect(check).toBe('NOOP');
    expect(listing).toMatch(/^FETCH \(UID INTERNALDATE RFC822\.SIZE/);
  });

  it('cut by the server between ticks: the next tick logs in again and drains, nothing lost', async () => {
    const { warm, drain, mail, log } = setup('warm-cut@company.test');
    await mail('Before the cut');
    expect((await drain()).counts.queued).toBe(1);
    const before = local.proxy.connections;
    local.proxy.disconnectAll();
    await mail('After the cut');
    const summary = await drain();
    expect(summary.counts.queued).toBe(1);
    expect(summary.stoppedBecause).toBe('empty');
    expect(local.proxy.connections - before).toBe(1);
    expect(warm.stats.discarded).toBe(1);
    expect(log.lines.map((l) => l.line).join('\n')).toMatch(/The warm IMAP session is not used again/);
    expect(await local.stack.readFolder('warm-cut@company.test', 'INBOX')).toHaveLength(0);
  });

  it('that does not answer its NOOP within 5 s is closed, and the tick logs in again and drains', async () => {
    const { warm, drain, mail, log } = setup('warm-silent@company.test');
    await mail('Before');
    await drain();
    local.proxy.swallow(/ NOOP/);
    await mail('After');
    const summary = await drain();
    expect(summary.counts.queued).toBe(1);
    expect(warm.stats).toMatchObject({ opened: 2, discarded: 1 });
    expect(log.lines.map((l) => l.line).join('\n')).toContain('no answer to NOOP within 5000 ms');
  }, 20_000);

  it('whose token expires within the margin is not used again: a new login, with a new token', async () => {
    let shift = 0;
    const { warm, drain, mail } = setup('warm-token@company.test', { now: () => Date.now() + shift });
    await mail('First');
    await drain();
    const before = local.proxy.connections;
    // The token the session logged in with (an hour's) now has less than the margin left.
    shift = 3_600_000 - TOKEN_MARGIN_MS + 60_000;
    await mail('Second');
    expect((await drain()).counts.queued).toBe(1);
    expect(local.proxy.connections - before).toBe(1);
    expect(warm.stats).toMatchObject({ opened: 2, discarded: 1 });
  });

  it('a drain that failed closes its session; the next logs in again and drains the mail', async () => {
    const { warm, drain, mail } = setup('warm-fail@company.test');
    await mail('Kept');
    local.proxy.dropOn(/FETCH 1:\*/);
    await expect(drain()).rejects.toThrow();
    const before = local.proxy.connections;
    const summary = await drain();
    expect(summary.counts.queued).toBe(1);
    expect(local.proxy.connections - before).toBe(1);
    expect(warm.stats.reused).toBe(0);
  });

  it('two overlapping checkouts never get one session: the second opens its own, and one is kept', async () => {
    const { rt, warm } = setup('warm-overlap@company.test');
    const log = memoryLogger();
    const open = () => MailboxSession.open({ config: rt.config, tokens: rt.tokens, log });
    const first = await warm.checkout(open, log);
    await warm.checkin(first, true);
    const [a, b] = await Promise.all([warm.checkout(open, log), warm.checkout(open, log)]);
    expect(a).not.toBe(b);
    expect([a, b]).toContain(first);
    await warm.checkin(a, true);
    await warm.checkin(b, true);
    // Only the one given back last stays open.
    expect(a.usable).toBe(false);
    expect(b.usable).toBe(true);
    expect(await warm.checkout(open, log)).toBe(b);
    await warm.checkin(b, true);
  });

  it('two overlapping drains of one mailbox: one drains, the other leaves it to the lease holder', async () => {
    const { drain, mail } = setup('warm-two@company.test');
    for (let i = 0; i < 5; i++) await mail(`Mail ${i}`);
    const runs = await Promise.all([drain(), drain()]);
    expect(runs.map((r) => r.stoppedBecause).sort()).toEqual(['empty', 'leased-elsewhere']);
    expect(runs.reduce((n, r) => n + r.counts.queued, 0)).toBe(5);
  });

  it('idle past the keep-warm time, it is closed: the next tick logs in again', async () => {
    const { warm, drain, mail } = setup('warm-idle@company.test', { keepWarmMs: 300 });
    await mail('Idle');
    await drain();
    const before = local.proxy.connections;
    await new Promise((r) => setTimeout(r, 800));
    expect((await drain()).counts.seen).toBe(0);
    expect(local.proxy.connections - before).toBe(1);
    expect(warm.stats).toMatchObject({ opened: 2, reused: 0 });
  });

  it('off (INBOXQ_IMAP_KEEP_WARM_SECONDS=0): a session per drain, closed after it', async () => {
    // The other tests' warm sessions closed first: then no connection may stay open.
    await local.closeWarmSessions();
    const { drain } = setup('warm-off@company.test', { keepWarmMs: 0 });
    const before = local.proxy.connections;
    await drain();
    await drain();
    expect(local.proxy.connections - before).toBe(2);
    for (const deadline = Date.now() + 5000; local.proxy.open > 0 && Date.now() < deadline;)
      await new Promise((r) => setTimeout(r, 50));
    expect(local.proxy.open).toBe(0);
  });
});
