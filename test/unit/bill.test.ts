/**
 * What the platform bills and records for the app's invocations: Flex Consumption's published
 * billing rules (localstack/host/flex-billing.ts) and the records the Functions host sends to
 * Application Insights under host.json's log levels (localstack/host/app-insights.ts), with the
 * product's own host.json.
 */
import { readdirSync, readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { isLogged, telemetryOf } from '../../localstack/host/app-insights';
import {
  activityPeriods,
  billedPeriodMs,
  billOf,
  FLEX_PRICES,
  idleMonthUsd,
  MONTH_MS,
  monthlyUsd,
} from '../../localstack/host/flex-billing';
import type { InvocationRecord } from '../../localstack/host/meter';
import { readHostJson } from '../../localstack/host/settings';

const inv = (fn: string, start: number, end: number, o: Partial<InvocationRecord> = {}): InvocationRecord => ({
  function: fn,
  trigger: fn === 'drainSchedule' ? 'timer' : 'queue',
  start,
  end,
  succeeded: true,
  logs: [],
  ...o,
});

describe("Flex Consumption's billing rules", () => {
  it.each([
    [9, 1000],
    [999, 1000],
    [1000, 1000],
    [1001, 1100],
    [1100, 1100],
    [2501, 2600],
  ])('an activity period of %i ms is billed as %i ms (1,000 ms at least, then up to the next 100 ms)', (ms, billed) => {
    expect(billedPeriodMs(ms)).toBe(billed);
  });

  it('merges the executions that overlap on an instance into one activity period, and only those', () => {
    expect(
      activityPeriods([
        { start: 0, end: 100 },
        { start: 50, end: 300 },
        { start: 300, end: 400 },
        { start: 2000, end: 2100 },
      ]),
    ).toEqual([
      { start: 0, end: 300 },
      { start: 300, end: 400 },
      { start: 2000, end: 2100 },
    ]);
  });

  it('bills each function on instances of its own: a tick that wakes a second function is two billed seconds', () => {
    const oneFunction = billOf([inv('drainSchedule', 0, 9)], 2048);
    const twoFunctions = billOf([inv('drainSchedule', 0, 9), inv('drain', 20, 42)], 2048);
    expect(oneFunction.billedMs).toBe(1000);
    expect(twoFunctions.billedMs).toBe(2000);
    expect(twoFunctions.gbSeconds).toBe(4);
    expect(twoFunctions.byFunction).toEqual({
      drainSchedule: { executions: 1, executingMs: 9, billedMs: 1000 },
      drain: { executions: 1, executingMs: 22, billedMs: 1000 },
    });
    expect(twoFunctions.usd).toBeCloseTo(4 * FLEX_PRICES.usdPerGbSecond + 2 * 0.4e-6, 12);
  });

  it("reproduces the issue's figure for the old design: a timer and a drain every 5 s at 2 GB is about US$52 a month", () => {
    // 18 timer and 17 drain executions in 90 s, each under a second.
    const records = [
      ...Array.from({ length: 18 }, (_, i) => inv('drainSchedule', i * 5000, i * 5000 + 9)),
      ...Array.from({ length: 17 }, (_, i) => inv('drain', i * 5000 + 300, i * 5000 + 322)),
    ];
    const bill = billOf(records, 2048);
    expect(bill.billedMs).toBe(35_000);
    expect(monthlyUsd(bill, 90_000)).toBeCloseTo(52.82, 1);
  });

  it('an idle month (30 days) of one timer tick every 5 s: US$27.16 at 2,048 MB, US$6.95 at 512 MB; the free grant takes off 100,000 GB-s', () => {
    // 518,400 ticks, each one billed second, and as many executions.
    expect(idleMonthUsd(5, 2048, 30, false)).toBeCloseTo(518_400 * 2 * 0.000026 + 0.5184 * 0.4, 6);
    expect(idleMonthUsd(5, 2048, 30, false)).toBeCloseTo(27.16, 2);
    expect(idleMonthUsd(5, 512, 30, false)).toBeCloseTo(6.95, 2);
    // 259,200 GB-s, 159,200 past the grant; 268,400 executions past theirs.
    expect(idleMonthUsd(5, 512, 30, true)).toBeCloseTo(159_200 * 0.000026 + 0.2684 * 0.4, 6);
    expect(idleMonthUsd(300, 512, 30, true)).toBe(0);
    // A tick that runs past a second is billed by the 100 ms: 1,250 ms is 1,300.
    expect(idleMonthUsd(5, 512, 1250, false)).toBeCloseTo(518_400 * 1.3 * 0.5 * 0.000026 + 0.5184 * 0.4, 6);
  });

  it('scales a measured window to a 30-day month', () => {
    const bill = billOf([inv('drainSchedule', 0, 10)], 1024);
    expect(monthlyUsd(bill, MONTH_MS)).toBeCloseTo(FLEX_PRICES.usdPerGbSecond + 0.4e-6, 12);
  });
});

describe('Application Insights records under host.json', () => {
  const product = readHostJson('.', {}).logLevel;

  it('picks the longest category rule, else default, and None sends nothing', () => {
    const rules = { default: 'Information', Function: 'Warning', 'Function.reply.User': 'Information', Host: 'None' };
    expect(isLogged('Function.reply.User', 'Information', rules)).toBe(true);
    expect(isLogged('Function.reply', 'Information', rules)).toBe(false);
    expect(isLogged('Function.reply', 'Error', rules)).toBe(true);
    expect(isLogged('Function.drain.User', 'information', rules)).toBe(false);
    expect(isLogged('Host.Results', 'Critical', rules)).toBe(false);
    expect(isLogged('Worker', 'Information', rules)).toBe(true);
    // A rule is a category or its prefix up to a dot, not any prefix.
    expect(isLogged('Functional', 'Information', { default: 'None', Function: 'Information' })).toBe(false);
    // One `*` stands for any text: every function's own lines, not the host's lines about it.
    const wild = { default: 'Information', Function: 'Warning', 'Function.*.User': 'Information' };
    expect(isLogged('Function.reply-sales.User', 'Information', wild)).toBe(true);
    expect(isLogged('Function.reply-sales', 'Information', wild)).toBe(false);
  });

  it('with the defaults, an idle tick every 5 s is a request and two traces each, and the aggregator', () => {
    const ticks = Array.from({ length: 720 }, (_, i) => inv('drainSchedule', i * 5000, i * 5000 + 10));
    expect(telemetryOf(ticks, { default: 'Information' })).toEqual({
      requests: 720,
      traces: 1440,
      hostMetrics: 120 * 7,
    });
  });

  it("with the product's host.json, an idle tick sends nothing; a function's own lines, and failures, still go", () => {
    expect(telemetryOf([inv('drainSchedule', 0, 10)], product)).toEqual({ requests: 0, traces: 0, hostMetrics: 0 });
    const working = inv('reply', 0, 50, {
      logs: [
        { category: 'user', level: 'information' },
        { category: 'user', level: 'warning' },
      ],
    });
    expect(telemetryOf([working], product)).toEqual({ requests: 0, traces: 2, hostMetrics: 0 });
    const failed = inv('drain', 0, 50, { succeeded: false, logs: [{ category: 'user', level: 'error' }] });
    // The function's error line and the host's "Executed … (Failed)".
    expect(telemetryOf([failed], product)).toEqual({ requests: 0, traces: 2, hostMetrics: 0 });
  });

  it("names every function the app registers, so each one's own lines stay at Information (a mailbox's own reply functions too)", () => {
    const names = readdirSync('functions')
      .map((f) => readFileSync(`functions/${f}`, 'utf8'))
      .flatMap((src) => [...src.matchAll(/app\.(?:timer|storageQueue)\('(\w+)'/g)].map((m) => m[1]!));
    expect(names.sort()).toEqual(['drain', 'drainSchedule', 'reply', 'replyPoison']);
    for (const name of [...names, 'reply-sales', 'replyPoison-sales'])
      expect(isLogged(`Function.${name}.User`, 'Information', product), name).toBe(true);
    expect(isLogged('Function.reply-sales', 'Information', product)).toBe(false);
    expect(isLogged('Host.Results', 'Information', product)).toBe(false);
  });
});
