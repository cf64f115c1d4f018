/**
 * What Flex Consumption bills for a set of invocations, by Microsoft's published rules
 * (azure-docs, articles/azure-functions/flex-consumption-plan.md, "Billing", and
 * functions-consumption-costs.md), on demand, no always-ready instances:
 *
 *   - execution time is billed per instance, for the memory provisioned (instanceMemoryMB) while the
 *     instance is actively executing functions, in GB-seconds;
 *   - "The minimum billable execution period for both execution modes is 1,000 ms. Past that, the
 *     billable activity period is rounded up to the nearest 100 ms";
 *   - apart from HTTP, Blob (Event Grid) and Durable triggers, "all other functions in the app are
 *     scaled individually in their own set of instances": a timer function and each queue function
 *     run on instances of their own, so their executions are never billed together;
 *   - every execution is counted, at a price per million;
 *   - a monthly free grant per subscription (GB-s and executions), not counted unless asked for.
 *
 * How they are applied here: each function is one instance (the rates here never need a second); on
 * it, executions that overlap form one activity period (billed once, as concurrent executions on an
 * instance are); each period is billed max(1,000 ms, its length rounded up to 100 ms).
 */
import type { InvocationRecord } from './meter';

/** The on-demand prices and free grant Microsoft lists for Flex Consumption (US$; check the pricing page for your region). */
export const FLEX_PRICES = {
  usdPerGbSecond: 0.000026,
  usdPerMillionExecutions: 0.4,
  freeGbSecondsPerMonth: 100_000,
  freeExecutionsPerMonth: 250_000,
} as const;

export const MINIMUM_PERIOD_MS = 1000;
export const ROUNDING_MS = 100;
/** A 30-day month. */
export const MONTH_MS = 30 * 24 * 3600_000;

export interface Interval {
  start: number;
  end: number;
}

/** Overlapping executions of one instance, merged into the periods it was actively executing. */
export function activityPeriods(executions: Interval[]): Interval[] {
  const sorted = [...executions].sort((a, b) => a.start - b.start);
  const out: Interval[] = [];
  for (const e of sorted) {
    const last = out.at(-1);
    if (last && e.start < last.end) last.end = Math.max(last.end, e.end);
    else out.push({ start: e.start, end: e.end });
  }
  return out;
}

/** One activity period as billed: at least 1,000 ms, past that rounded up to 100 ms. */
export function billedPeriodMs(lengthMs: number): number {
  return Math.max(MINIMUM_PERIOD_MS, Math.ceil(lengthMs / ROUNDING_MS) * ROUNDING_MS);
}

export interface Bill {
  executions: number;
  /** Time spent executing (the periods' own lengths). */
  executingMs: number;
  billedMs: number;
  gbSeconds: number;
  usd: number;
  /** Per function: executions and billed time. */
  byFunction: Record<string, { executions: number; executingMs: number; billedMs: number }>;
}

/** The bill of these invocations, at `memoryMb` per instance, without the free grant. */
export function billOf(invocations: InvocationRecord[], memoryMb: number): Bill {
  const byFunction: Bill['byFunction'] = {};
  for (const name of new Set(invocations.map((i) => i.function))) {
    const periods = activityPeriods(invocations.filter((i) => i.function === name));
    byFunction[name] = {
      executions: invocations.filter((i) => i.function === name).length,
      executingMs: periods.reduce((sum, p) => sum + (p.end - p.start), 0),
      billedMs: periods.reduce((sum, p) => sum + billedPeriodMs(p.end - p.start), 0),
    };
  }
  const parts = Object.values(byFunction);
  const executions = parts.reduce((sum, f) => sum + f.executions, 0);
  const billedMs = parts.reduce((sum, f) => sum + f.billedMs, 0);
  const gbSeconds = (billedMs / 1000) * (memoryMb / 1024);
  return {
    executions,
    executingMs: parts.reduce((sum, f) => sum + f.executingMs, 0),
    billedMs,
    gbSeconds,
    usd: gbSeconds * FLEX_PRICES.usdPerGbSecond + (executions / 1e6) * FLEX_PRICES.usdPerMillionExecutions,
    byFunction,
  };
}

/** A month at the rate of `bill` over `windowMs`, with or without the subscription's free grant. */
export function monthlyUsd(bill: Bill, windowMs: number, options: { freeGrant?: boolean } = {}): number {
  const scale = MONTH_MS / windowMs;
  let gbSeconds = bill.gbSeconds * scale;
  let executions = bill.executions * scale;
  if (options.freeGrant) {
    gbSeconds = Math.max(0, gbSeconds - FLEX_PRICES.freeGbSecondsPerMonth);
    executions = Math.max(0, executions - FLEX_PRICES.freeExecutionsPerMonth);
  }
  return gbSeconds * FLEX_PRICES.usdPerGbSecond + (executions / 1e6) * FLEX_PRICES.usdPerMillionExecutions;
}

/**
 * A month of a schedule that ticks every `periodSeconds`, each tick one activity period of
 * `tickMs` on the timer's instance and nothing else (what an idle deployment of inboxq bills).
 */
export function idleMonthUsd(periodSeconds: number, memoryMb: number, tickMs: number, freeGrant: boolean): number {
  const ticks = MONTH_MS / (periodSeconds * 1000);
  const start = 0;
  const bill = billOf(
    [{ function: 'tick', trigger: 'timer', start, end: start + tickMs, succeeded: true, logs: [] }],
    memoryMb,
  );
  return monthlyUsd({ ...bill }, MONTH_MS / ticks, { freeGrant });
}
