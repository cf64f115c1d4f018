/**
 * The Functions handlers, independent of their registration so tests and the local runner call
 * exactly what the host calls. Each adapts the InvocationContext (logging, trigger metadata) to the
 * library and decides what the host should do with a failure: a thrown error makes the host retry
 * the queue message and, after maxDequeueCount deliveries, move it to `<queue>-poison`.
 *
 *   schedule (timer)           -> schedule.ts: a tick of every mailbox (look, drain a share, or request a drain)
 *   drain (drain-requests)     -> drain-request.ts: the mailbox drained, a failure reported, not thrown
 *   reply (replies)            -> reply-delivery.ts: sent exactly once, a failure thrown for a retry
 *   reply-<key> (replies-<key>) -> the same, for the one mailbox whose queue it is (several mailboxes)
 *   replyPoison (replies-poison) -> reply-delivery.ts: the task marked failed, the sender told
 *   replyPoison-<key> (replies-<key>-poison) -> the same, for one mailbox
 */
import type { InvocationContext, Timer } from '@azure/functions';

import type { TickOutcome } from '../drain/tick';
import { type DrainOutcome, drainRequested } from './drain-request';
import { deliverReply, type RepliesRoute, replyPoisoned } from './reply-delivery';
import { type DeploymentRuntime, processDeployment } from './runtime';
import { tick } from './schedule';

export type { TickOutcome } from '../drain/tick';
export type { DrainOutcome } from './drain-request';

export interface Handlers {
  /** Timer: a tick of every mailbox, each looked at, drained or left to the drain function. */
  schedule(timer: Timer, context: InvocationContext): Promise<TickOutcome[]>;
  /** Queue (drain-requests): drains the mailbox a request names. */
  drain(message: unknown, context: InvocationContext): Promise<DrainOutcome>;
  /** Queue (replies, or a mailbox's replies-<key>: `route` is its key): sends a reply or a batch's acknowledgements. */
  reply(message: unknown, context: InvocationContext, route?: RepliesRoute): Promise<void>;
  /** Queue (replies-poison, or replies-<key>-poison): a reply that could not be sent. */
  replyPoison(message: unknown, context: InvocationContext, route?: RepliesRoute): Promise<void>;
}

export function createHandlers(
  getDeployment: () => DeploymentRuntime = processDeployment,
  options: { maxDequeueCount?: number } = {},
): Handlers {
  const maxDequeueCount = options.maxDequeueCount ?? 5;
  return {
    schedule: (timer, context) => tick(getDeployment, timer, context),
    drain: (message, context) => drainRequested(getDeployment, message, context),
    reply: (message, context, route = null) => deliverReply(getDeployment, maxDequeueCount, message, context, route),
    replyPoison: (message, context, route = null) => replyPoisoned(getDeployment, message, context, route),
  };
}
