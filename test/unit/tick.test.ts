/**
 * What the drain schedule remembers of a mailbox between ticks (shared/drain/watch.ts), and how
 * much of an inbox a tick drains itself (sliceLength), on a clock of the test's own.
 */
import { describe, expect, it } from 'vitest';

import { type DrainSummary, emptySummary, sliceLength } from '../../shared/drain/drain';
import { TICK_SLICE } from '../../shared/drain/tick';
import {
  FIRST_DEMOTION_MS,
  FULL_RUN_INTERVAL_MS,
  MailboxWatch,
  MAX_DEMOTION_MS,
  REQUEST_INTERVAL_MS,
} from '../../shared/drain/watch';
import type { MailboxEntry } from '../../shared/mailbox/imap';

const T0 = Date.parse('2026-12-07T10:00:00.000Z');
const MIN = 60_000;

function summary(over: Partial<DrainSummary> = {}, held = 0): DrainSummary {
  const empty = emptySummary('r', 'agent@company.test', T0);
  return { ...empty, counts: { ...empty.counts, held }, ...over };
}

describe('the drain schedule, per mailbox between ticks', () => {
  it('runs on the first tick of an instance, then only when mail comes or the periodic run is due', () => {
    const w = new MailboxWatch('default');
    expect(w.due(T0)).toBe('the first tick of this instance');
    w.ran(summary(), T0);
    expect(w.due(T0 + 5000)).toBeNull();
    expect(w.due(T0 + FULL_RUN_INTERVAL_MS - 1)).toBeNull();
    // Due within a minute past the interval, at a point that depends on the mailbox's key.
    expect(w.due(T0 + FULL_RUN_INTERVAL_MS + MIN)).toMatch(/periodic/);
  });

  it('spreads the periodic runs of several mailboxes over a minute', () => {
    const dueAt = (key: string) => {
      const w = new MailboxWatch(key);
      w.ran(summary(), T0);
      let t = T0 + FULL_RUN_INTERVAL_MS;
      while (!w.due(t)) t += 1000;
      return t - T0 - FULL_RUN_INTERVAL_MS;
    };
    const offsets = ['sales', 'support', 'hr', 'ops', 'legal', 'it', 'a', 'b', 'c', 'd'].map(dueAt);
    expect(Math.max(...offsets)).toBeLessThan(MIN);
    expect(new Set(offsets).size).toBeGreaterThan(5);
    // The same key, the same point: an instance's runs don't drift by restart.
    expect(dueAt('sales')).toBe(offsets[0]);
  });

  it('runs again at the next tick after a run that held mail back, and after a failed one once its demotion is over', () => {
    const held = new MailboxWatch('default');
    held.ran(summary({}, 1), T0);
    expect(held.due(T0 + 5000)).toBe('mail was held back by the last run');
    expect(held.demoted(T0 + 5000)).toBe(false);

    const failed = new MailboxWatch('default');
    failed.ran(summary(), T0);
    failed.runFailed(T0);
    expect(failed.demoted(T0 + FIRST_DEMOTION_MS - 1)).toBe(true);
    expect(failed.demoted(T0 + FIRST_DEMOTION_MS)).toBe(false);
    expect(failed.due(T0 + FIRST_DEMOTION_MS)).toBe('the last run failed');
  });

  it('doubles the demotion with each failure in a row, up to its cap, and forgets them once the mailbox is healthy', () => {
    const w = new MailboxWatch('default');
    const lengths: number[] = [];
    let t = T0;
    for (let i = 0; i < 6; i++) {
      w.runFailed(t);
      let end = t;
      while (w.demoted(end)) end += 1000;
      lengths.push(end - t);
      t = end;
    }
    expect(lengths).toEqual([1, 2, 4, 8, 15, 15].map((m) => m * MIN));
    expect(Math.max(...lengths)).toBe(MAX_DEMOTION_MS);
    w.idle();
    w.runFailed(t);
    expect(w.demoted(t + FIRST_DEMOTION_MS)).toBe(false);
  });

  it('says the first failed look of a streak and its end, not the ones between', () => {
    const w = new MailboxWatch('default');
    expect(w.lookWorked()).toBe(false);
    expect(w.lookFailed(T0)).toBe(true);
    expect(w.lookFailed(T0 + MIN)).toBe(false);
    expect(w.lookFailed(T0 + 3 * MIN)).toBe(false);
    expect(w.lookWorked()).toBe(true);
    expect(w.lookWorked()).toBe(false);
  });

  it('asks the drain function at most once a minute, and again at once when a request could not be sent', () => {
    const w = new MailboxWatch('default');
    expect(w.takeRequest(T0)).toBe(true);
    expect(w.takeRequest(T0 + 5000)).toBe(false);
    expect(w.takeRequest(T0 + REQUEST_INTERVAL_MS - 1)).toBe(false);
    expect(w.takeRequest(T0 + REQUEST_INTERVAL_MS)).toBe(true);
    w.requestFailed();
    expect(w.takeRequest(T0 + REQUEST_INTERVAL_MS + 5000)).toBe(true);
  });

  it("waits out Exchange's back-off without connecting, then runs to reconcile", () => {
    const w = new MailboxWatch('default');
    w.ran(summary(), T0);
    w.ran(summary({ stoppedBecause: 'throttled', backoffUntil: T0 + 5 * MIN }), T0);
    expect(w.waiting(T0 + 5 * MIN - 1)).toBe(true);
    expect(w.waiting(T0 + 5 * MIN)).toBe(false);
    expect(w.due(T0 + 5 * MIN)).toBe('the last run was throttled by Exchange');
  });

  it('learns nothing from a run that found another holding the mailbox', () => {
    const w = new MailboxWatch('default');
    w.ran(summary({ stoppedBecause: 'leased-elsewhere' }), T0);
    expect(w.due(T0)).toBe('the first tick of this instance');
  });
});

describe('the share of an inbox a tick drains itself', () => {
  const mails = (...sizes: number[]): MailboxEntry[] =>
    sizes.map((size, i) => ({ uid: i + 1, size, internalDate: undefined }));
  const slice = { maxMessages: 3, maxBytes: 1000, budgetMs: 1000 };

  it.each([
    ['an empty inbox', mails(), 500, 0],
    ['fewer mails than the share', mails(10, 10), 500, 2],
    ['more mails than the share', mails(10, 10, 10, 10), 500, 3],
    ['the run limit below the share', mails(10, 10, 10), 2, 2],
    ['a byte budget reached after two', mails(400, 500, 200), 500, 2],
    ['exactly the byte budget', mails(500, 500), 500, 2],
    ['an oldest mail larger than the budget alone', mails(1001, 1), 500, 0],
  ])('%s', (_name, inbox, runLimit, expected) => {
    expect(sliceLength(inbox, slice, runLimit)).toBe(expected);
  });

  it("leaves a large mail and a burst to the drain function: a tick's share is small", () => {
    expect(TICK_SLICE.maxMessages).toBeLessThanOrEqual(25);
    expect(sliceLength(mails(20 * 1024 * 1024), TICK_SLICE, 500)).toBe(0);
  });
});
