/**
 * What the Functions host would send to Application Insights for a set of invocations, under
 * host.json's `logging.logLevel` (azure-docs, articles/azure-functions/configure-monitoring.md,
 * "Configure categories"). The local host has no Application Insights of its own; this counts the
 * records the real host writes for each invocation, by category:
 *
 *   Host.Results               requests     one per execution, at Information
 *   Function.<name>            traces       "Executing …" and "Executed … (Succeeded)" at Information;
 *                                           "Executed … (Failed)" at Error
 *   Function.<name>.User       traces       each line the function logged, at its own level
 *   Host.Aggregator            customMetrics  counts and durations per function, every 30 s (or
 *                                           1,000 executions): count, successes, failures, success
 *                                           rate, minimum, maximum and average duration, at Information
 *
 * A category's level is the one of the longest `logLevel` key it starts with (a key's one `*`
 * standing for any text), else `default`.
 * Adaptive sampling (maxTelemetryItemsPerSecond, 20 by default) is not modelled: it starts well above
 * the rates counted here. The app's own custom metrics go through its exporter, not the host, and
 * are counted where they arrive (the benchmark's ingestion endpoint).
 */
import type { InvocationRecord } from './meter';

const LEVELS = ['trace', 'debug', 'information', 'warning', 'error', 'critical', 'none'] as const;

/** The programming model's level names (and the host's) as an index in LEVELS. */
function levelIndex(level: string): number {
  const l = level.toLowerCase();
  const i = LEVELS.indexOf((l === 'info' ? 'information' : l === 'warn' ? 'warning' : l) as (typeof LEVELS)[number]);
  return i < 0 ? LEVELS.indexOf('information') : i;
}

/** Whether a log of `level` in `category` is sent, under these `logging.logLevel` rules. */
export function isLogged(category: string, level: string, logLevel: Record<string, string>): boolean {
  let rule = logLevel['default'] ?? 'Information';
  let longest = -1;
  for (const [key, value] of Object.entries(logLevel)) {
    if (key === 'default') continue;
    // One `*` in a rule stands for any text (Microsoft.Extensions.Logging's rule selector):
    // `Function.*.User` is every function's own lines, whatever its name.
    const star = key.indexOf('*');
    const matches =
      star >= 0
        ? category.startsWith(key.slice(0, star)) && category.endsWith(key.slice(star + 1))
        : category === key || category.startsWith(`${key}.`);
    if (matches && key.length > longest) {
      longest = key.length;
      rule = value;
    }
  }
  const min = levelIndex(rule);
  return min < LEVELS.indexOf('none') && levelIndex(level) >= min;
}

/** The metrics the host's aggregator writes per function and flush window. */
export const AGGREGATOR_METRICS_PER_WINDOW = 7;
export const AGGREGATOR_FLUSH_MS = 30_000;

export interface TelemetryCount {
  requests: number;
  traces: number;
  /** The host's aggregated customMetrics (the app's own are counted where they are exported). */
  hostMetrics: number;
}

export function telemetryOf(invocations: InvocationRecord[], logLevel: Record<string, string>): TelemetryCount {
  const count: TelemetryCount = { requests: 0, traces: 0, hostMetrics: 0 };
  const windows = new Set<string>();
  for (const inv of invocations) {
    const fn = `Function.${inv.function}`;
    if (isLogged('Host.Results', 'Information', logLevel)) count.requests++;
    if (isLogged(fn, 'Information', logLevel)) count.traces++; // Executing …
    if (isLogged(fn, inv.succeeded ? 'Information' : 'Error', logLevel)) count.traces++; // Executed …
    for (const line of inv.logs)
      if (isLogged(line.category === 'user' ? `${fn}.User` : fn, line.level, logLevel)) count.traces++;
    windows.add(`${inv.function}:${Math.floor(inv.end / AGGREGATOR_FLUSH_MS)}`);
  }
  if (isLogged('Host.Aggregator', 'Information', logLevel))
    count.hostMetrics = windows.size * AGGREGATOR_METRICS_PER_WINDOW;
  return count;
}
