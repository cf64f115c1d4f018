/**
 * The Functions handlers, independent of their registration so tests and the local runner call
 * exactly what the host calls. They adapt the InvocationContext (logging, trigger metadata) to the
 * library and decide what the host should do with a failure: a thrown error makes the host retry
 * the queue message and, after maxDequeueCount deliveries, move it to `<queue>-poison`.
 */
import type { InvocationContext, Timer } from '@azure/functions';
import { drainMailbox, type DrainSummary } from '../drain/drain';
import { describeError, InboxqError, InvalidMessageError, UnknownTaskError } from '../errors';
import { handlePoisonedReply, sendReply } from '../reply/reply';
import { createLogger, type Logger } from '../telemetry/log';
import { processRuntime, type Runtime } from './runtime';

export function contextLogger(context: InvocationContext): Logger {
  return createLogger({
    info: (l) => context.info(l),
    warn: (l) => context.warn(l),
    error: (l) => context.error(l),
  });
}

export interface Handlers {
  drain(timer: Timer, context: InvocationContext): Promise<DrainSummary | undefined>;
  reply(message: unknown, context: InvocationContext): Promise<void>;
  replyPoison(message: unknown, context: InvocationContext): Promise<void>;
}

export function createHandlers(getRuntime: () => Runtime = processRuntime, options: { maxDequeueCount?: number } = {}): Handlers {
  const maxDequeueCount = options.maxDequeueCount ?? 5;
  return {
    async drain(timer, context) {
      const log = contextLogger(context);
      let rt: Runtime;
      try {
        rt = getRuntime();
      } catch (err) {
        log.error(`Drain can't start: ${describeError(err)}`);
        throw err;
      }
      if (timer.isPastDue) log.warn('Drain timer is past due; running now', { mailbox: rt.config.mailbox });
      return drainMailbox({ config: rt.config, tokens: rt.tokens, ledger: rt.ledger, storage: rt.storage, log });
    },

    async reply(message, context) {
      const log = contextLogger(context);
      const dequeueCount = Number(context.triggerMetadata?.['dequeueCount'] ?? 1);
      const queueMessageId = String(context.triggerMetadata?.['id'] ?? '');
      try {
        const rt = getRuntime();
        await sendReply(message, { config: rt.config, tokens: rt.tokens, ledger: rt.ledger, storage: rt.storage, log });
      } catch (err) {
        const permanent = err instanceof InvalidMessageError || err instanceof UnknownTaskError || (err instanceof InboxqError && !err.retryable);
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
      const rt = getRuntime();
      await handlePoisonedReply(message, { config: rt.config, tokens: rt.tokens, ledger: rt.ledger, storage: rt.storage, log });
    },
  };
}
