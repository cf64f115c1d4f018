/**
 * inboxq's custom metrics, through the OpenTelemetry API. Without a registered provider (tests,
 * the CLI) they cost nothing; in Azure `setupTelemetry` registers Azure Monitor, and they land in
 * Application Insights' customMetrics.
 *
 *   inboxq.mail            counter   mailbox, outcome (queued | rejected | quarantined | duplicate)
 *   inboxq.mail.rejected   counter   mailbox, reason (verdict code)
 *   inboxq.reply           counter   mailbox, outcome (sent | already-sent | found-in-sent-folder | deferred | failed)
 *   inboxq.token.requests  counter   outcome (issued | failed)
 *   inboxq.drain.runs      counter   mailbox, outcome (ok | partial | failed | leased-elsewhere)
 *   inboxq.drain.duration  histogram mailbox, outcome   (ms)
 *   inboxq.heartbeat       counter   mailbox, key: one per run that drained (ok or partial) and per
 *                                    tick that found the mailbox idle; its absence for 15 minutes is
 *                                    the silence alert (infra/app/silence.kql)
 *   inboxq.drain.backlog   histogram mailbox, key: mail left in INBOX when a run ended
 *   inboxq.mail.lag        histogram mailbox: ms from a mail's arrival (INTERNALDATE) to its task
 *
 * Instruments are looked up at each use: a meter taken before the provider is registered would
 * stay a no-op.
 */
import { type Attributes, metrics } from '@opentelemetry/api';

const METER = 'inboxq';

/** Names the alerts and the workbook query (infra/app/*.kql); a test checks both sides agree. */
export const METRIC_NAMES = {
  mail: 'inboxq.mail',
  rejected: 'inboxq.mail.rejected',
  reply: 'inboxq.reply',
  tokenRequests: 'inboxq.token.requests',
  runs: 'inboxq.drain.runs',
  duration: 'inboxq.drain.duration',
  heartbeat: 'inboxq.heartbeat',
  backlog: 'inboxq.drain.backlog',
  lag: 'inboxq.mail.lag',
  authFailures: 'inboxq.auth.failures',
} as const;

function counter(name: string, description: string) {
  return metrics.getMeter(METER).createCounter(name, { description });
}

export const inboxqMetrics = {
  mail(mailbox: string, outcome: string): void {
    counter(METRIC_NAMES.mail, 'Mails handled by the drain, by outcome').add(1, { mailbox, outcome });
  },
  rejected(mailbox: string, reason: string): void {
    counter(METRIC_NAMES.rejected, 'Mails rejected by the sender policy, by reason').add(1, { mailbox, reason });
  },
  reply(mailbox: string, outcome: string): void {
    counter(METRIC_NAMES.reply, 'Replies handled, by outcome').add(1, { mailbox, outcome });
  },
  tokenRequest(outcome: 'issued' | 'failed'): void {
    counter(METRIC_NAMES.tokenRequests, 'Calls to the Entra ID token endpoint (not served from cache)').add(1, {
      outcome,
    });
  },
  /** A run that drained (ok or partial): the mailbox is alive, with this backlog left. */
  heartbeat(mailbox: string, key: string, backlog: number): void {
    inboxqMetrics.alive(mailbox, key);
    const meter = metrics.getMeter(METER);
    meter
      .createHistogram(METRIC_NAMES.backlog, { description: 'Mail left in INBOX when a run ended' })
      .record(backlog, { mailbox, key });
  },
  /**
   * The mailbox is being drained: a run drained it, or the schedule's tick found it idle. One series
   * per mailbox, exported once a minute however many ticks counted in it.
   */
  alive(mailbox: string, key: string): void {
    counter(METRIC_NAMES.heartbeat, 'Runs that drained the mailbox and ticks that found it idle').add(1, {
      mailbox,
      key,
    });
  },
  lag(mailbox: string, ms: number): void {
    metrics
      .getMeter(METER)
      .createHistogram(METRIC_NAMES.lag, { description: 'From arrival to task', unit: 'ms' })
      .record(Math.max(0, ms), { mailbox });
  },
  /** Entra ID, the IMAP login or the SMTP login refused the mailbox's credential. */
  authFailure(mailbox: string, stage: 'token' | 'imap' | 'smtp'): void {
    counter(METRIC_NAMES.authFailures, 'Credentials refused, by where (token, imap, smtp)').add(1, { mailbox, stage });
  },
  run(mailbox: string, outcome: string, durationMs: number): void {
    const attributes: Attributes = { mailbox, outcome };
    counter(METRIC_NAMES.runs, 'Drain runs, by outcome').add(1, attributes);
    metrics
      .getMeter(METER)
      .createHistogram(METRIC_NAMES.duration, { description: 'Drain run duration', unit: 'ms' })
      .record(durationMs, attributes);
  },
};
