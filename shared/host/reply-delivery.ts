/**
 * A reply (or inboxq's own acknowledgements and failure notices) taken from a replies queue and
 * sent; and what is done with one that ended in its poison queue.
 *
 * Which mailbox a reply belongs to is the queue's: `replies-<key>` is one mailbox's, and a reply on
 * it that names another mailbox is refused, naming both. The shared `replies` queue is the one
 * mailbox's in a deployment of one; in a deployment of several it is still read, by the mailbox
 * the reply names, for what workers put there before their mailboxes had queues of their own
 * (docs/mailboxes.md, Moving over).
 *
 * A reply that can't succeed as it is (malformed, for another mailbox, an unknown task, an
 * attachment it may not take, a reply id of inboxq's own) is refused at once: moved to the poison
 * queue with the reason beside it, nothing sent. Any other failure is thrown, so the host retries
 * the message after the visibility timeout and moves it to the poison queue after maxDequeueCount
 * deliveries; the log line says which of these comes next.
 */
import type { InvocationContext } from '@azure/functions';

import { mailboxResources, REPLIES_QUEUE } from '../contract/messages';
import { describeError, InboxqError, InvalidMessageError, UnknownTaskError } from '../errors';
import { handlePoisonedAcknowledgements, isAcknowledgementsMessage, sendAcknowledgements } from '../reply/acknowledge';
import { handlePoisonedReply, parseReplyMessage, sendDeferredFailureNotice, sendReply } from '../reply/reply';
import type { StorageClients } from '../storage/clients';
import { sendQueueMessage } from '../storage/queues';
import { contextLogger, deploymentOrLog, queueDelivery } from './invocation';
import type { DeploymentRuntime, Runtime } from './runtime';

/** The replies queue a reply function reads: a mailbox's own (its key), or the shared `replies` (null). */
export type RepliesRoute = string | null;

function typeOf(message: unknown): unknown {
  return typeof message === 'object' && message !== null ? (message as { type?: unknown }).type : undefined;
}

export async function deliverReply(
  getDeployment: () => DeploymentRuntime,
  maxDequeueCount: number,
  message: unknown,
  context: InvocationContext,
  route: RepliesRoute = null,
): Promise<void> {
  const log = contextLogger(context);
  const { dequeueCount, queueMessageId } = queueDelivery(context);
  const queue = mailboxResources(route).repliesQueue;
  let rt: Runtime | undefined;
  try {
    const d = deploymentOrLog(getDeployment, log, 'The reply');
    rt = replyRuntime(d, message, route);
    if (route === null && d.mailboxes.length > 1)
      log.warn(
        `A reply came on the shared ${REPLIES_QUEUE} queue: the workers of ${rt.config.mailbox} should put their replies on ${rt.config.repliesQueue} (docs/mailboxes.md, Moving over)`,
        { queueMessageId },
      );
    const deps = { ...rt, log, ...(queueMessageId ? { deliveryId: queueMessageId } : {}) };
    if (isAcknowledgementsMessage(message)) await sendAcknowledgements(message, deps);
    else if (typeOf(message) === 'inboxq.failure-notice') await sendDeferredFailureNotice(message, deps);
    else await sendReply(message, deps);
  } catch (err) {
    const storage = rt?.storage ?? anyStorage(getDeployment);
    if ((err instanceof InvalidMessageError || err instanceof UnknownTaskError) && storage) {
      // It can't succeed as it is: to the poison queue now, with the reason, instead of after
      // maxDequeueCount billed deliveries.
      const reason = err.message;
      await sendQueueMessage(
        storage,
        `${queue}-poison`,
        typeof message === 'object' && message !== null
          ? { ...message, refused: reason }
          : { refused: reason, message },
        { mailbox: rt?.config.mailbox },
      );
      log.error(`Reply refused: ${describeError(err)}; it is moved to ${queue}-poison and nothing is sent`, {
        queueMessageId,
        queue,
      });
      return;
    }
    const permanent = err instanceof InboxqError && !err.retryable;
    const fate =
      dequeueCount >= maxDequeueCount
        ? `this was the last delivery: the host moves it to the ${queue}-poison queue`
        : permanent
          ? `it can't succeed as it is and goes to the ${queue}-poison queue after ${maxDequeueCount} deliveries`
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
  route: RepliesRoute = null,
): Promise<void> {
  const log = contextLogger(context);
  const d = deploymentOrLog(getDeployment, log, 'The poisoned-reply handler');
  let rt: Runtime;
  try {
    rt = replyRuntime(d, message, route);
  } catch (err) {
    log.error(`A poisoned reply can't be tied to a mailbox and is dropped: ${describeError(err)}`);
    return;
  }
  const deps = { ...rt, log };
  if (isAcknowledgementsMessage(message)) handlePoisonedAcknowledgements(message, deps);
  else if (typeOf(message) === 'inboxq.failure-notice')
    log.error('A failure notice could not be delivered after its retries', { mailbox: rt.config.mailbox });
  else await handlePoisonedReply(message, deps);
}

/** The deployment's Storage (every mailbox's is the same account), when the deployment loads. */
function anyStorage(getDeployment: () => DeploymentRuntime): StorageClients | undefined {
  try {
    return getDeployment().mailboxes[0]?.storage;
  } catch {
    return undefined;
  }
}

/**
 * The mailbox a reply is answered for. On a mailbox's own queue, that mailbox, and a reply naming
 * another is refused; on the shared queue, the mailbox the reply names.
 */
function replyRuntime(d: DeploymentRuntime, message: unknown, route: RepliesRoute): Runtime {
  const named =
    typeof message === 'object' && message !== null ? (message as { mailbox?: unknown }).mailbox : undefined;
  if (route !== null) {
    const own = d.mailboxes.find((m) => m.config.key === route);
    if (!own)
      throw new InvalidMessageError(
        `The replies queue ${mailboxResources(route).repliesQueue} belongs to no mailbox of this deployment`,
        [`mailbox key ${route} is not one of ${d.mailboxes.map((m) => m.config.key).join(', ')}`],
      );
    if (typeof named === 'string' && named.trim().toLowerCase() !== own.config.mailbox)
      throw new InvalidMessageError(
        `A reply on ${own.config.repliesQueue}, the queue of ${own.config.mailbox}, names another mailbox`,
        [
          `mailbox: ${named} is not ${own.config.mailbox}; a mailbox's worker answers its own tasks only, on its own queue`,
        ],
        { mailbox: own.config.mailbox },
      );
    return own;
  }
  const rt = typeof named === 'string' ? d.find(named) : d.mailboxes.length === 1 ? d.mailboxes[0] : undefined;
  if (rt) return rt;
  // Validate against the contract for a precise message (a missing or malformed mailbox field).
  if (d.mailboxes.length === 1) parseReplyMessage(message, d.mailboxes[0]!.config.mailbox);
  throw new InvalidMessageError('The reply names a mailbox this deployment does not serve', [
    `mailbox: ${typeof named === 'string' ? named : '(missing)'} is not one of ${d.mailboxes.map((m) => m.config.mailbox).join(', ')}`,
  ]);
}
