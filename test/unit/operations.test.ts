/**
 * The pure parts of the operator's commands: what a trace query names, when a mailbox is stale,
 * and the silence alert's KQL checked against the names the code emits (KQL can't run here).
 */
import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { IDLE_RUN_PERIOD_MS } from '../../shared/drain/watch';
import { SILENCE_WINDOW_MS, silentMailboxes, staleness } from '../../shared/ops/silence';
import { classifyQuery, printable } from '../../shared/ops/trace';
import { METRIC_NAMES } from '../../shared/telemetry/metrics';

describe('trace queries', () => {
  it('tell a task id, a conversation id, a Message-ID and a sender apart', () => {
    expect(classifyQuery('0123456789ABCDEF0123456789abcdef')).toEqual({
      kind: 'task',
      value: '0123456789abcdef0123456789abcdef',
    });
    expect(classifyQuery('[#0123456789abcdef01234567]')).toEqual({
      kind: 'conversation',
      value: '0123456789abcdef01234567',
    });
    expect(classifyQuery('0123456789abcdef01234567')?.kind).toBe('conversation');
    expect(classifyQuery(' <a.b@c.example> ')).toEqual({ kind: 'message-id', value: '<a.b@c.example>' });
    expect(classifyQuery('Alice@Partner.Example')).toEqual({ kind: 'sender', value: 'alice@partner.example' });
    for (const bad of ['', 'hello', 'a b@c', '<a b@c>', '0123', '<>']) expect(classifyQuery(bad), bad).toBeUndefined();
  });

  it('print what a sender wrote without control characters or bidi overrides', () => {
    expect(printable('Wire \u001b[31mnow\u001b[0m\r\n\u202eevil')).toBe('Wire ?[31mnow?[0m???evil');
    expect(printable('Grüße, 你好')).toBe('Grüße, 你好');
  });
});

describe('staleness (inboxq status)', () => {
  const at = (iso: string) => Date.parse(iso);
  const grace = 5 * 60_000 + 60_000;

  it('is three runs of the schedule missed, each given the run budget and a minute of grace', () => {
    const last = '2026-11-27T10:00:10.000Z';
    const every2 = '0 */2 * * * *';
    // Due at 10:02, 10:04, 10:06; stale once 10:06 plus the grace has passed.
    expect(staleness(last, every2, at('2026-11-27T10:11:59.000Z'), grace).stale).toBe(false);
    const stale = staleness(last, every2, at('2026-11-27T10:12:00.000Z'), grace);
    expect(stale).toEqual({
      stale: true,
      reason:
        'no run has drained this mailbox since 2026-11-27T10:00:10.000Z: 3 runs of the schedule "0 */2 * * * *" were due since (the last at 2026-11-27T10:06:00.000Z)',
    });
  });

  it('with INBOX empty, is three of the periodic runs an idle mailbox gets missed: an idle tick records nothing', () => {
    const last = '2026-11-27T10:00:00.000Z';
    const every5s = '*/5 * * * * *';
    // An idle mailbox is run every 6 minutes at most (5, plus up to a minute of spread): 10:18 is the third.
    expect(IDLE_RUN_PERIOD_MS).toBe(6 * 60_000);
    expect(staleness(last, every5s, at('2026-11-27T10:23:59.000Z'), grace, false).stale).toBe(false);
    expect(staleness(last, every5s, at('2026-11-27T10:24:00.000Z'), grace, false)).toEqual({
      stale: true,
      reason:
        'no run has drained this mailbox since 2026-11-27T10:00:00.000Z: an idle mailbox is run every 6 minutes at most, and 3 of those were due since (the last at 2026-11-27T10:18:00.000Z)',
    });
    // Mail waiting: every tick should have run, so 15 s and the grace are enough.
    expect(staleness(last, every5s, at('2026-11-27T10:06:15.000Z'), grace, true).stale).toBe(true);
    // A schedule slower than the idle runs keeps its own rule.
    expect(staleness(last, '0 0 * * * *', at('2026-11-27T12:30:00.000Z'), grace, false).stale).toBe(false);
  });

  it('follows an irregular schedule: weekdays at 09:00 are not stale over a weekend', () => {
    const friday = '2026-11-27T09:00:30.000Z';
    const weekdays = '0 0 9 * * 1-5';
    expect(staleness(friday, weekdays, at('2026-11-30T12:00:00.000Z'), grace).stale).toBe(false); // Monday
    expect(staleness(friday, weekdays, at('2026-12-02T09:07:00.000Z'), grace).stale).toBe(true); // Wednesday
  });

  it('is stale when no run ever drained the mailbox', () => {
    expect(staleness(undefined, '0 */1 * * * *', Date.now(), grace)).toEqual({
      stale: true,
      reason: 'no run has drained this mailbox yet',
    });
  });
});

describe('the silence alert', () => {
  const kql = readFileSync('infra/app/silence.kql', 'utf8');
  const bicep = readFileSync('infra/app/observability.bicep', 'utf8');
  const main = readFileSync('infra/main.bicep', 'utf8');

  it('reads the heartbeat metric and dimension the code emits, over the window the rule in silence.ts uses', () => {
    expect(kql).toContain(`name == "${METRIC_NAMES.heartbeat}" and valueSum > 0`);
    expect(kql).toContain('distinct key = tostring(customDimensions["key"])');
    expect(kql).toContain(`ago(${SILENCE_WINDOW_MS / 60_000}m)`);
    // Every mailbox expected, so one that never ran is silent too.
    expect(kql).toContain('let expected = dynamic(__MAILBOX_KEYS__);');
    expect(kql).toContain('join kind=leftanti alive on key');
    expect(bicep).toContain("replace(loadTextContent('silence.kql'), '__MAILBOX_KEYS__', string(mailboxKeys))");
    const rule = bicep.slice(
      bicep.indexOf("name: 'inboxq-mailbox-silent'"),
      bicep.indexOf('}', bicep.indexOf("name: 'inboxq-mailbox-silent'")),
    );
    expect(rule).toContain('query: silenceQuery');
    expect(rule).toContain(`window: 'PT${SILENCE_WINDOW_MS / 60_000}M'`);
    expect(main).toMatch(/mailboxKeys: empty\(mailboxKeys\) \? \[\s+'default'\s+\] : mailboxKeys/);
  });

  it('fires per mailbox: for one without a heartbeat in the window, and for one that never sent any', () => {
    const now = Date.parse('2026-11-27T12:00:00Z');
    const beat = (key: string, minutesAgo: number, value = 1) => ({
      name: METRIC_NAMES.heartbeat,
      key,
      mailbox: `${key}@company.example`,
      timestamp: now - minutesAgo * 60_000,
      value,
    });
    const beats = [beat('sales', 3), beat('support', 16), beat('hr', 2, 0), { ...beat('ops', 1), name: 'inboxq.mail' }];
    expect(silentMailboxes(['sales', 'support', 'hr', 'ops', 'new'], beats, now)).toEqual([
      'support',
      'hr',
      'ops',
      'new',
    ]);
  });

  it('the workbook reads metrics the code emits', () => {
    const workbook = readFileSync('infra/app/mailboxes.kql', 'utf8');
    const names = [...workbook.matchAll(/name == "([^"]+)"/g)].map((m) => m[1]);
    expect(names).toEqual([METRIC_NAMES.heartbeat, METRIC_NAMES.backlog, METRIC_NAMES.lag]);
    expect(bicep).toContain("query: loadTextContent('mailboxes.kql')");
  });
});
