/**
 * One tick of the drain schedule for one mailbox, on the timer's own instance. The timer is the
 * one function an idle deployment runs (one billed second a tick on Flex Consumption, whatever the
 * number of mailboxes), so an idle tick does as little as the guarantees allow:
 *
 *   look    the mailbox's kept IMAP session answers a NOOP, which also reports new mail (EXISTS);
 *           a new session when there is none. Bounded by LOOK_TIMEOUT_MS.
 *   idle    INBOX is empty and no run is due (watch.ts): a heartbeat, nothing else: no Storage
 *           request, no log line.
 *   drain   mail is waiting (or a run is due): the tick drains a share of it here, TICK_SLICE, with
 *           every guarantee a run has (lease, ledger, order of steps). The first mail after a quiet
 *           hour takes the same path as any other: no second instance, no cold start on its way.
 *   request more mail than a tick takes, a share left over, or a mailbox whose look or run failed
 *           here: a drain request on `drain-requests`, for the drain function on an instance of its
 *           own (at most one a minute per mailbox), so one busy, slow or broken mailbox never holds
 *           up the next tick of the others. For a while after a request the ticks leave the mailbox
 *           to that run; then they drain their share again, which a run still holding the
 *           mailbox's lease turns into a no-op, and a run that never came is made up for.
 *
 * A tick throws nothing: whatever happens is this mailbox's outcome.
 */
import type { MailboxContext } from '../context';
import { DRAIN_REQUESTS_QUEUE, type DrainRequest } from '../contract/messages';
import { describeError, ImapError, toError } from '../errors';
import { LONG_BACKOFF_MS, MailboxSession } from '../mailbox/imap';
import type { WarmSession } from '../mailbox/warm';
import { sendQueueMessage } from '../storage/queues';
import { inboxqMetrics } from '../telemetry/metrics';
import { drainMailbox, type DrainSlice, type DrainSummary } from './drain';
import type { MailboxWatch } from './watch';

/**
 * What a tick drains itself: a few small mails within seconds, at Exchange Online's round trips.
 * More mail, or larger, goes to the drain function, whose runs take INBOXQ_MAX_MESSAGES_PER_RUN
 * within INBOXQ_RUN_BUDGET_SECONDS.
 */
export const TICK_SLICE: DrainSlice = { maxMessages: 25, maxBytes: 16 * 1024 * 1024, budgetMs: 3_000 };
/** The look at one mailbox, a login included, ends within this. */
export const LOOK_TIMEOUT_MS = 10_000;
/** A run in the tick that takes longer than this (its server is slow, or throttles) demotes the mailbox. */
export const SLOW_RUN_MS = 10_000;
/**
 * Mailboxes a tick drains at once (their looks are all at once): each holds up to a slice of mail
 * in memory, and ten together took a 512-MB instance's worker to 354 MB where four stay well under
 * (docs/benchmarks.md, peak memory).
 */
export const TICK_DRAINS_AT_ONCE = 4;

export interface TickDeps extends MailboxContext {
  watch: MailboxWatch;
  imapSession: WarmSession;
  /** Runs a mailbox's drain when the tick has room for it (TICK_DRAINS_AT_ONCE); at once when absent. */
  drainSlot?: <T>(run: () => Promise<T>) => Promise<T>;
}

/**
 * idle: nothing to do. drained: a run here (summary, or error when it failed). requested: the
 * mailbox was left to the drain function (`request` when a request went out with this tick).
 * waiting: Exchange's back-off is not over; no connection made.
 */
export type TickAction = 'idle' | 'drained' | 'requested' | 'waiting';

export interface TickOutcome {
  key: string;
  mailbox: string;
  action: TickAction;
  /** Why the tick ran a drain without mail, or left the mailbox to the drain function. */
  why?: string;
  summary?: DrainSummary;
  request?: DrainRequest;
  error?: Error;
}

export async function tickMailbox(deps: TickDeps): Promise<TickOutcome> {
  const { config, log, watch } = deps;
  const now = deps.now ?? Date.now;
  const base = { key: config.key, mailbox: config.mailbox };
  if (watch.waiting(now())) return { ...base, action: 'waiting', why: "Exchange's back-off is not over" };
  if (watch.demoted(now())) return requestDrain(deps, 'its look or run failed in the schedule a short while ago');

  let mails: number;
  try {
    const open = () => MailboxSession.open({ config, tokens: deps.tokens, log });
    mails = await deps.imapSession.look(open, log, LOOK_TIMEOUT_MS, config.mailbox);
  } catch (err) {
    return lookFailed(deps, err);
  }
  if (watch.lookWorked()) log.info('The drain schedule reaches the mailbox again', { mailbox: config.mailbox });

  const due = watch.due(now());
  if (mails === 0 && !due) {
    watch.idle();
    inboxqMetrics.alive(config.mailbox, config.key);
    return { ...base, action: 'idle' };
  }
  // More mail than a tick drains: the drain function's runs take it, on an instance of their own.
  const burst =
    mails > TICK_SLICE.maxMessages
      ? await requestDrain(deps, `${mails} mails wait in INBOX, more than a tick drains (${TICK_SLICE.maxMessages})`)
      : undefined;
  if (watch.handedOff(now()))
    return burst ?? { ...base, action: 'requested', why: 'a drain was requested a moment ago' };

  let summary: DrainSummary;
  try {
    const run = () => drainMailbox({ ...deps, slice: TICK_SLICE, quiet: true });
    summary = await (deps.drainSlot ? deps.drainSlot(run) : run());
  } catch (err) {
    // drainMailbox has logged the failure with its hint and recorded it in the ledger.
    watch.runFailed(now());
    return { ...base, action: 'drained', error: toError(err) };
  }
  watch.ran(summary, now());
  if (summary.durationMs > SLOW_RUN_MS) watch.ranSlowly(now());
  const outcome: TickOutcome = { ...base, action: 'drained', summary, ...(mails === 0 && due ? { why: due } : {}) };
  if (summary.remaining > 0 && (summary.stoppedBecause === 'limit' || summary.stoppedBecause === 'budget')) {
    const left = await requestDrain(deps, `${summary.remaining} mails are left after the tick's share`);
    return { ...outcome, ...(left.request ? { request: left.request } : {}), why: left.why! };
  }
  return outcome;
}

/** The look failed: a long throttling back-off is waited out; anything else demotes the mailbox for a while. */
async function lookFailed(deps: TickDeps, err: unknown): Promise<TickOutcome> {
  const { config, log, watch } = deps;
  const now = deps.now ?? Date.now;
  if (err instanceof ImapError && err.failure === 'throttled' && (err.backoffMs ?? 0) > LONG_BACKOFF_MS) {
    const until = now() + err.backoffMs!;
    watch.throttled(until);
    log.warn(`Exchange throttled the mailbox; its runs wait until ${new Date(until).toISOString()}`, {
      mailbox: config.mailbox,
    });
    return { key: config.key, mailbox: config.mailbox, action: 'waiting', why: describeError(err) };
  }
  if (watch.lookFailed(now()))
    log.warn(
      `The drain schedule can't look at the mailbox (${describeError(err)}); its runs go to the drain function until it can`,
      { mailbox: config.mailbox },
    );
  const outcome = await requestDrain(deps, 'the look at the mailbox failed');
  return { ...outcome, error: outcome.error ?? toError(err) };
}

/** The mailbox left to the drain function: a request on drain-requests, at most one a minute. */
async function requestDrain(deps: TickDeps, why: string): Promise<TickOutcome> {
  const { config, log, watch, storage } = deps;
  const now = deps.now ?? Date.now;
  const base = { key: config.key, mailbox: config.mailbox, action: 'requested' as const };
  if (!watch.takeRequest(now())) return { ...base, why: `${why}; a drain was requested in the last minute` };
  const request: DrainRequest = {
    type: 'inboxq.drain-request',
    version: 1,
    key: config.key,
    mailbox: config.mailbox,
    requestedAt: new Date(now()).toISOString(),
  };
  try {
    // A request nobody took within the mailbox's lease period is stale: a later tick asks again.
    await sendQueueMessage(storage, DRAIN_REQUESTS_QUEUE, request, {
      mailbox: config.mailbox,
      timeToLiveSeconds: config.drain.leaseMs / 1000,
    });
  } catch (err) {
    watch.requestFailed();
    log.error(`A drain of the mailbox could not be requested: ${describeError(err)}`, { mailbox: config.mailbox });
    return { ...base, why, error: toError(err) };
  }
  log.info(`Drain requested: ${why}`, { mailbox: config.mailbox });
  return { ...base, why, request };
}
