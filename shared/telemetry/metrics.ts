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
 *
 * Instruments are looked up at each use: a meter taken before the provider is registered would
 * stay a no-op.
 */
import { type Attributes, metrics } from '@opentelemetry/api';

const METER = 'inboxq';

function counter(name: string, description: string) {
  return metrics.getMeter(METER).createCounter(name, { description });
}

export const inboxqMetrics = {
  mail(mailbox: string, outcome: string): void {
    counter('inboxq.mail', 'Mails handled by the drain, by outcome').add(1, { mailbox, outcome });
  },
  rejected(mailbox: string, reason: string): void {
    counter('inboxq.mail.rejected', 'Mails rejected by the sender policy, by reason').add(1, { mailbox, reason });
  },
  reply(mailbox: string, outcome: string): void {
    counter('inboxq.reply', 'Replies handled, by outcome').add(1, { mailbox, outcome });
  },
  tokenRequest(outcome: 'issued' | 'failed'): void {
    counter('inboxq.token.requests', 'Calls to the Entra ID token endpoint (not served from cache)').add(1, {
      outcome,
    });
  },
  run(mailbox: string, outcome: string, durationMs: number): void {
    const attributes: Attributes = { mailbox, outcome };
    counter('inboxq.drain.runs', 'Drain runs, by outcome').add(1, attributes);
    metrics
      .getMeter(METER)
      .createHistogram('inboxq.drain.duration', { description: 'Drain run duration', unit: 'ms' })
      .record(durationMs, attributes);
  },
};
