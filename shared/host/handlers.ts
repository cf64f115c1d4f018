/**
 * The Functions handlers, independent of their registration so tests and the local runner call
 * exactly what the host calls. They adapt the InvocationContext (logging, trigger metadata) to the
 * library and decide what the host should do with a failure: a thrown error makes the host retry
 * the queue message and, after maxDequeueCount deliveries, move it to `<queue>-poison`.
 *
 * Draining fans out: the schedule (a timer, one instance at a time) puts one drain request per
 * mailbox on the drain-requests queue, and each request is drained by its own invocation, so the
 * host spreads mailboxes over instances and a slow or broken mailbox never holds up another.
 */
import type { InvocationContext, Timer } from '@azure/functions';

import { DRAIN_REQUESTS_QUEUE, type DrainRequest, drainRequestSchema } from '../contract/messages';
import { drainMailbox, type DrainSummary } from '../drain/drain';
import { describeError, InboxqError, InvalidMessageError, toError, UnknownTaskError } from '../errors';
import { handlePoisonedAcknowledgements, isAcknowledgementsMessage, sendAcknowledgements } from '../reply/acknowledge';
import { handlePoisonedReply, parseReplyMessage, sendReply } from '../reply/reply';
import { sendQueueMessage } from '../storage/queues';
import { createLogger, type Logger } from '../telemetry/log';
import { type DeploymentRuntime, processDeployment, type Runtime } from './runtime';

export function contextLogger(context: InvocationContext): Logger {
  return createLogger({
    info: (l) => context.info(l),
    warn: (l) => context.warn(l),
    error: (l) => context.error(l),
  });
}

/** What became of one drain request. A failed drain is reported here, not thrown (see `drain`). */
export interface DrainOutcome {
  key: string;
  mailbox: string;
  summary?: DrainSummary;
  error?: Error;
  /** Why nothing was done: the request was unreadable, or names a mailbox these settings don't serve. */
  skipped?: string;
}

export interface Handlers {
  /** Timer: puts a drain request for every mailbox on the drain-requests queue. */
  schedule(timer: Timer, context: InvocationContext): Promise<DrainRequest[]>;
  /** Queue (drain-requests): drains the mailbox a request names. */
  drain(message: unknown, context: InvocationContext): Promise<DrainOutcome>;
  reply(message: unknown, context: InvocationContext): Promise<void>;
  replyPoison(message: unknown, context: InvocationContext): Promise<void>;
}

export function createHandlers(
  getDeployment: () => DeploymentRuntime = processDeployment,
  options: { maxDequeueCount?: number } = {},
): Handlers {
  const maxDequeueCount = options.maxDequeueCount ?? 5;

  /** The deployment, or a logged ConfigError naming every mailbox and setting at fault. */
  function deployment(log: Logger, what: string): DeploymentRuntime {
    try {
      return getDeployment();
    } catch (err) {
      log.error(`${what} can't start: ${describeError(err)}`);
      throw err;
    }
  }

  /** The mailbox a reply names; replies of every mailbox share the replies queue. */
  function replyRuntime(d: DeploymentRuntime, message: unknown): Runtime {
    const named =
      typeof message === 'object' && message !== null ? (message as { mailbox?: unknown }).mailbox : undefined;
    const rt = typeof named === 'string' ? d.find(named) : d.mailboxes.length === 1 ? d.mailboxes[0] : undefined;
    if (rt) return rt;
    // Validate against the contract for a precise message (a missing or malformed mailbox field).
    if (d.mailboxes.length === 1) parseReplyMessage(message, d.mailboxes[0]!.config.mailbox);
    throw new InvalidMessageError('The reply names a mailbox this deployment does not serve', [
      `mailbox: ${typeof named === 'string' ? named : '(missing)'} is not one of ${d.mailboxes.map((m) => m.config.mailbox).join(', ')}`,
    ]);
  }

  return {
    async schedule(timer, context) {
      const log = contextLogger(context);
      const d = deployment(log, 'The drain schedule');
      if (timer.isPastDue) log.warn('Drain schedule is past due; requesting drains now');
      const requestedAt = new Date().toISOString();
      const requests = d.mailboxes.map(({ config }): DrainRequest => ({
        type: 'inboxq.drain-request',
        version: 1,
        key: config.key,
        mailbox: config.mailbox,
        requestedAt,
      }));
      // A request nobody took within its mailbox's lease period is stale: the next tick asks again.
      const storage = d.mailboxes[0]!.storage;
      await Promise.all(
        d.mailboxes.map(({ config }, i) =>
          sendQueueMessage(storage, DRAIN_REQUESTS_QUEUE, requests[i]!, {
            mailbox: config.mailbox,
            timeToLiveSeconds: config.drain.leaseMs / 1000,
          }),
        ),
      );
      log.info('Drain requested', { mailboxes: requests.length });
      return requests;
    },

    /**
     * A failed drain is logged (with the mailbox and what to do), recorded in the ledger and
     * counted in the metrics, and not thrown: retrying at once would only repeat a refused login
     * or an unreachable server, and the next tick of the schedule tries again anyway.
     */
    async drain(message, context) {
      const log = contextLogger(context);
      const parsed = drainRequestSchema.safeParse(typeof message === 'string' ? safeJson(message) : message);
      if (!parsed.success) {
        log.error('A drain request does not follow the contract and is dropped', {
          issues: parsed.error.issues.map((i) => i.path.join('.')).join(', '),
        });
        return { key: '', mailbox: '', skipped: 'unreadable request' };
      }
      const request = parsed.data;
      let d: DeploymentRuntime;
      try {
        d = deployment(log, `The drain of ${request.mailbox}`);
      } catch (err) {
        // Logged with every problem; retrying the request can't help until the settings change.
        return { key: request.key, mailbox: request.mailbox, error: toError(err), skipped: 'invalid settings' };
      }
      const rt = d.find(request.key);
      if (!rt || rt.config.mailbox !== request.mailbox) {
        log.warn('A drain request names a mailbox these settings do not serve; dropped', {
          key: request.key,
          mailbox: request.mailbox,
        });
        return { key: request.key, mailbox: request.mailbox, skipped: 'mailbox not served here' };
      }
      try {
        const summary = await drainMailbox({ ...rt, log });
        return { key: request.key, mailbox: request.mailbox, summary };
      } catch (err) {
        // drainMailbox has logged the failure with its hint and recorded it in the ledger.
        return { key: request.key, mailbox: request.mailbox, error: toError(err) };
      }
    },

    async reply(message, context) {
      const log = contextLogger(context);
      const dequeueCount = Number(context.triggerMetadata?.['dequeueCount'] ?? 1);
      const id = context.triggerMetadata?.['id'];
      const queueMessageId = typeof id === 'string' ? id : '';
      try {
        const rt = replyRuntime(deployment(log, 'The reply'), message);
        const deps = {
          ...rt,
          log,
          ...(queueMessageId ? { deliveryId: queueMessageId } : {}),
        };
        if (isAcknowledgementsMessage(message)) await sendAcknowledgements(message, deps);
        else await sendReply(message, deps);
      } catch (err) {
        const permanent =
          err instanceof InvalidMessageError ||
          err instanceof UnknownTaskError ||
          (err instanceof InboxqError && !err.retryable);
        const last = dequeueCount >= maxDequeueCount;
        const fate = last
          ? 'this was the last delivery: the host moves it to the replies-poison queue'
          : permanent
            ? `it can't succeed as it is and goes to the replies-poison queue after ${maxDequeueCount} deliveries`
            : 'it is retried after the visibility timeout';
        log.error(`Reply failed (delivery ${dequeueCount} of ${maxDequeueCount}): ${describeError(err)}; ${fate}`, {
          queueMessageId,
          dequeueCount,
        });
        throw err;
      }
    },

    async replyPoison(message, context) {
      const log = contextLogger(context);
      const d = deployment(log, 'The poisoned-reply handler');
      let rt: Runtime;
      try {
        rt = replyRuntime(d, message);
      } catch (err) {
        log.error(`A poisoned reply can't be tied to a mailbox and is dropped: ${describeError(err)}`);
        return;
      }
      const deps = { ...rt, log };
      if (isAcknowledgementsMessage(message)) handlePoisonedAcknowledgements(message, deps);
      else await handlePoisonedReply(message, deps);
    },
  };
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
