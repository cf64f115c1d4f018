/**
 * `inboxq status`: per mailbox, is it being drained, and is anything waiting or stuck?
 *
 *   runs     the last run and the last run that drained (ledger, inboxqMailboxes)
 *   mailbox  mail waiting in INBOX (count, oldest arrival) and set aside (STATUS of the quarantine folder)
 *   queues   depths of the tasks, replies and drain-requests queues and their *-poison queues
 *   pacing   replies sent this minute against the per-minute limit
 *   poison   poisoned replies kept for `inboxq replay` (shared/reply/parked.ts)
 *
 * Unhealthy (exit 1) when a mailbox is stale (silence.ts) or a poison queue holds messages. The
 * mailbox part needs a token; when it can't be had the rest is still reported, with the error.
 */
import type { InboxqConfig } from '../config/types';
import { DRAIN_REQUESTS_QUEUE, REPLIES_QUEUE } from '../contract/messages';
import { describeError } from '../errors';
import { readBackoff } from '../ledger/lease';
import type { Ledger } from '../ledger/ledger';
import { readPace } from '../ledger/pacing';
import { listParkedReplies } from '../reply/parked';
import type { StorageClients } from '../storage/clients';
import { type Staleness, staleness } from './silence';
import { printable } from './trace';

export interface RunView {
  at: string;
  runId: string;
  outcome: string;
  counts: Record<string, number>;
  error?: string;
}

export interface MailboxStatus {
  mailbox: string;
  key: string;
  lastRun: RunView | null;
  lastSuccess: RunView | null;
  inbox: { mails: number; oldestArrival: string | null } | { error: string };
  setAside: { folder: string; mails: number } | { error: string };
  /** Approximate message counts; null for a queue that does not exist yet. */
  queues: Record<string, number | null>;
  pacing: { perMinute: number; sentThisMinute: number; pausedUntil: string | null };
  /** Until when Exchange asked the drain runs to wait (an IMAP back-off), or null. */
  imapBackoffUntil: string | null;
  /** Poisoned replies kept for `inboxq replay replies-poison`. */
  poisonedReplies: number;
  staleness: Staleness | { stale: false; reason: string };
  /** What makes the mailbox unhealthy; empty when it is healthy. */
  problems: string[];
}

/** The IMAP side of status, given by the caller (a session on the mailbox). */
export interface MailboxCounts {
  inbox: number;
  oldestArrival: Date | undefined;
  setAside: number | undefined;
}

export interface StatusSource {
  config: InboxqConfig;
  ledger: Ledger;
  storage: StorageClients;
  /** Counts the mailbox's folders; throws when the mailbox can't be reached. */
  countMailbox: () => Promise<MailboxCounts>;
}

function runView(state: Record<string, unknown>, prefix: 'lastRun' | 'lastSuccess'): RunView | null {
  const text = (name: string) => (typeof state[name] === 'string' ? state[name] : '');
  const at = text(prefix === 'lastRun' ? 'lastRunFinishedAt' : 'lastSuccessAt');
  if (!at) return null;
  const counts = text(`${prefix}Counts`);
  const error = prefix === 'lastRun' ? text('lastError') : '';
  return {
    at,
    runId: text(prefix === 'lastRun' ? 'lastRunId' : 'lastSuccessRunId'),
    outcome: text(`${prefix}Outcome`),
    counts: counts ? (JSON.parse(counts) as Record<string, number>) : {},
    ...(error ? { error } : {}),
  };
}

/**
 * The queues a mailbox's status reports: its tasks and replies queues, the drain-requests queue,
 * their poison queues; with several mailboxes, also the shared replies queue read while moving over.
 */
export function queuesOf(config: Pick<InboxqConfig, 'tasksQueue' | 'repliesQueue'>): string[] {
  const base = [...new Set([config.tasksQueue, config.repliesQueue, REPLIES_QUEUE, DRAIN_REQUESTS_QUEUE])];
  return [...base, ...base.map((q) => `${q}-poison`)];
}

async function queueDepth(storage: StorageClients, name: string): Promise<number | null> {
  const client = await storage.queue(name);
  try {
    return (await client.getProperties()).approximateMessagesCount ?? 0;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return null;
    throw err;
  }
}

export async function mailboxStatus(
  source: StatusSource,
  options: { schedule: string | undefined; now: number },
): Promise<MailboxStatus> {
  const { config, ledger, storage } = source;
  const state = (await ledger.getMailboxState(config.mailbox)) ?? {};
  const lastRun = runView(state, 'lastRun');
  const lastSuccess = runView(state, 'lastSuccess');
  const queues: Record<string, number | null> = {};
  for (const q of queuesOf(config)) {
    try {
      queues[q] = await queueDepth(storage, q);
    } catch (err) {
      throw new Error(`reading the depth of queue ${q} failed: ${describeError(err)}`, { cause: err });
    }
  }
  let inbox: MailboxStatus['inbox'];
  let setAside: MailboxStatus['setAside'];
  try {
    const counts = await source.countMailbox();
    inbox = { mails: counts.inbox, oldestArrival: counts.oldestArrival?.toISOString() ?? null };
    setAside = { folder: config.drain.quarantineFolder, mails: counts.setAside ?? 0 };
  } catch (err) {
    inbox = { error: describeError(err) };
    setAside = { error: 'not read (the mailbox could not be reached)' };
  }
  const pace = await readPace(storage, config.mailbox, () => options.now);
  const poisonedReplies = (await listParkedReplies(storage, config.mailbox)).length;
  const backoff = await readBackoff(storage, config.mailbox, options.now);
  const iso = (ms: number) => (ms > 0 ? new Date(ms).toISOString() : null);
  const stale = options.schedule
    ? staleness(
        lastSuccess?.at,
        options.schedule,
        options.now,
        config.drain.runBudgetMs + 60_000,
        // Mail waiting (or not known): every tick should be running; an empty INBOX is run every few minutes.
        'error' in inbox || inbox.mails > 0,
      )
    : { stale: false as const, reason: 'not judged: INBOXQ_DRAIN_SCHEDULE is not set here (or give --schedule)' };
  const problems: string[] = [];
  if (stale.stale) problems.push(`stale: ${stale.reason}`);
  for (const [q, n] of Object.entries(queues)) if (q.endsWith('-poison') && n) problems.push(`${n} message(s) in ${q}`);
  if (poisonedReplies > 0)
    problems.push(
      `${poisonedReplies} poisoned repl${poisonedReplies === 1 ? 'y' : 'ies'} kept; once the cause is fixed: inboxq replay replies-poison`,
    );
  if ('error' in inbox) problems.push(`the mailbox can't be read: ${inbox.error}`);
  return {
    mailbox: config.mailbox,
    key: config.key,
    lastRun,
    lastSuccess,
    inbox,
    setAside,
    queues,
    pacing: {
      perMinute: config.reply.maxPerMinute,
      sentThisMinute: pace.sentThisMinute,
      pausedUntil: iso(pace.blockedUntil),
    },
    imapBackoffUntil: iso(backoff),
    poisonedReplies,
    staleness: stale,
    problems,
  };
}

function ageOf(iso: string, now: number): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} days`;
}

export function formatStatus(statuses: MailboxStatus[], now: number): string {
  const out: string[] = [];
  for (const s of statuses) {
    const run = (r: RunView | null) =>
      r
        ? `${r.at} (${ageOf(r.at, now)} ago), ${r.outcome}, seen ${r.counts['seen'] ?? 0}, queued ${r.counts['queued'] ?? 0}, rejected ${r.counts['rejected'] ?? 0}, set aside ${r.counts['quarantined'] ?? 0}`
        : 'none';
    out.push(
      `inboxq status: ${s.mailbox}${s.key !== 'default' ? ` (mailbox "${s.key}")` : ''}  ${s.problems.length ? 'UNHEALTHY' : 'ok'}`,
    );
    out.push(
      `  last run          ${run(s.lastRun)}${s.lastRun?.error ? `; error: ${printable(s.lastRun.error)}` : ''}`,
    );
    out.push(`  last drained      ${run(s.lastSuccess)}`);
    out.push(`  schedule          ${s.staleness.stale ? 'STALE: ' : ''}${s.staleness.reason}`);
    out.push(
      'error' in s.inbox
        ? `  INBOX             not read: ${s.inbox.error}`
        : `  INBOX             ${s.inbox.mails} waiting${s.inbox.oldestArrival ? `, oldest arrived ${ageOf(s.inbox.oldestArrival, now)} ago` : ''}`,
    );
    if (!('error' in s.setAside)) out.push(`  set aside         ${s.setAside.mails} in ${s.setAside.folder}`);
    out.push(
      `  queues            ${Object.entries(s.queues)
        .map(([q, n]) => `${q} ${n ?? '-'}`)
        .join(', ')}`,
    );
    out.push(
      `  reply pacing      ${s.pacing.perMinute > 0 ? `${s.pacing.sentThisMinute} of ${s.pacing.perMinute} this minute` : 'off'}${s.pacing.pausedUntil ? `; sending paused by Exchange until ${s.pacing.pausedUntil}` : ''}`,
    );
    if (s.imapBackoffUntil) out.push(`  IMAP back-off     runs wait until ${s.imapBackoffUntil}, as Exchange asked`);
    for (const p of s.problems) out.push(`  ! ${p}`);
    out.push('');
  }
  return out.join('\n');
}
