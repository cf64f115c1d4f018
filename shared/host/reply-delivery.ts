/**
 * A reply (or a batch's acknowledgements) taken from the replies queue and sent; and what is done
 * with one that ended in replies-poison. A failed send is thrown, so the host retries the message
 * after the visibility timeout and moves it to replies-poison after maxDequeueCount deliveries;
 * the log line says which of these comes next.
 */
import type { InvocationContext } from '@azure/functions';

import { describeError, InboxqError, InvalidMessageError, UnknownTaskError } from '../errors';
import { handlePoisonedAcknowledgements, isAcknowledgementsMessage, sendAcknowledgements } from '../reply/acknowledge';
import { handlePoisonedReply, parseReplyMessage, sendReply } from '../reply/reply';
import { contextLogger, deploymentOrLog, queueDelivery } from './invocation';
import type { DeploymentRuntime, Runtime } from './runtime';

export async function deliverReply(
  getDeployment: () => DeploymentRuntime,
  maxDequeueCount: number,
  message: unknown,
  context: InvocationContext,
): Promise<void> {
  const log = contextLogger(context);
  const { dequeueCount, queueMessageId } = queueDelivery(context);
  try {
    const rt = replyRuntime(deploymentOrLog(getDeployment, log, 'The reply'), message);
    const deps = { ...rt, log, ...(queueMessageId ? { deliveryId: queueMessageId } : {}) };
    if (isAcknowledgementsMessage(message)) await sendAcknowledgements(message, deps);
    else await sendReply(message, deps);
  } catch (err) {
    const permanent =
      err instanceof InvalidMessageError ||
      err instanceof UnknownTaskError ||
      (err instanceof InboxqError && !err.retryable);
    const fate =
      dequeueCount >= maxDequeueCount
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
}

export async function replyPoisoned(
  getDeployment: () => DeploymentRuntime,
  message: unknown,
  context: InvocationContext,
): Promise<void> {
  const log = contextLogger(context);
  const d = deploymentOrLog(getDeployment, log, 'The poisoned-reply handler');
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
