/**
 * When is a mailbox silent? Two rules, one for each place that asks:
 *
 * - `inboxq status` (staleness), from the ledger's mailbox row (`lastSuccessAt`): with mail waiting in
 *   INBOX, no run that drained (ok or partial) since three occurrences of the drain schedule have
 *   passed, each given the run's budget and a minute to finish (every tick that sees mail runs one);
 *   with INBOX empty, none since three of the periodic runs an idle mailbox gets
 *   (shared/drain/watch.ts: IDLE_RUN_PERIOD_MS at most): an idle tick
 *   records nothing.
 * - The silence alert (infra/app/silence.kql, evaluated by Azure Monitor): no `inboxq.heartbeat`
 *   of a mailbox in the last 15 minutes, including a mailbox that never sent one. `silentMailboxes`
 *   is the same rule over recorded heartbeats, so it can be tested here where KQL can't run; a test
 *   checks that the KQL names what the code emits.
 */
import { CronExpressionParser } from 'cron-parser';

import { IDLE_RUN_PERIOD_MS } from '../drain/watch';
import { METRIC_NAMES } from '../telemetry/metrics';

/** The window of the silence alert: a mailbox with no heartbeat for this long is silent. */
export const SILENCE_WINDOW_MS = 15 * 60_000;
/** Schedule occurrences without a run that drained before `inboxq status` calls a mailbox stale. */
export const STALE_PERIODS = 3;

export interface Staleness {
  stale: boolean;
  reason: string;
}

/**
 * Stale when `STALE_PERIODS` occurrences of `schedule` (NCRONTAB, six fields, UTC) lie between the
 * last run that drained and `now - graceMs` (a run started on the last occurrence may still be on);
 * with no mail waiting, when `STALE_PERIODS` idle-run periods do, if that is later.
 */
export function staleness(
  lastSuccessAt: string | undefined,
  schedule: string,
  now: number,
  graceMs: number,
  mailWaiting = true,
): Staleness {
  if (!lastSuccessAt) return { stale: true, reason: 'no run has drained this mailbox yet' };
  const since = Date.parse(lastSuccessAt);
  const interval = CronExpressionParser.parse(schedule, { tz: 'UTC', currentDate: new Date(since) });
  const due: Date[] = [];
  for (let i = 0; i < STALE_PERIODS; i++) due.push(interval.next().toDate());
  const third = due[STALE_PERIODS - 1]!.getTime();
  const idle = since + STALE_PERIODS * IDLE_RUN_PERIOD_MS;
  if (!mailWaiting && idle > third) {
    if (idle + graceMs <= now)
      return {
        stale: true,
        reason: `no run has drained this mailbox since ${lastSuccessAt}: an idle mailbox is run every ${IDLE_RUN_PERIOD_MS / 60_000} minutes at most, and ${STALE_PERIODS} of those were due since (the last at ${new Date(idle).toISOString()})`,
      };
    return { stale: false, reason: `last drained at ${lastSuccessAt}` };
  }
  if (third + graceMs <= now)
    return {
      stale: true,
      reason: `no run has drained this mailbox since ${lastSuccessAt}: ${STALE_PERIODS} runs of the schedule "${schedule}" were due since (the last at ${new Date(third).toISOString()})`,
    };
  return { stale: false, reason: `last drained at ${lastSuccessAt}` };
}

/** One heartbeat: a customMetrics row of `inboxq.heartbeat` (or its recording in a test). */
export interface Heartbeat {
  name: string;
  key: string;
  mailbox: string;
  timestamp: number;
  value: number;
}

/**
 * The mailbox keys the silence alert fires for at `now`: those of `expected` without a heartbeat
 * (value > 0) in the window. What infra/app/silence.kql computes.
 */
export function silentMailboxes(expected: string[], heartbeats: Heartbeat[], now: number): string[] {
  const alive = new Set(
    heartbeats
      .filter(
        (h) =>
          h.name === METRIC_NAMES.heartbeat &&
          h.value > 0 &&
          h.timestamp > now - SILENCE_WINDOW_MS &&
          h.timestamp <= now,
      )
      .map((h) => h.key),
  );
  return expected.filter((key) => !alive.has(key));
}
