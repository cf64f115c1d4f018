/**
 * The drain schedule (a timer; the host runs one invocation of it at a time across the app): one
 * tick of every mailbox, all at once, in this one invocation (shared/drain/tick.ts). An idle tick
 * is a NOOP per mailbox on the sessions this instance keeps, and nothing else; mail is drained
 * here, a tick's share at a time, and what is more than that, or slow, or failing, is left to the
 * drain function on `drain-requests`, so no mailbox holds up another's tick. Every mailbox is looked
 * at at once; TICK_DRAINS_AT_ONCE of them are drained at once (memory).
 */
import type { InvocationContext, Timer } from '@azure/functions';
import pLimit from 'p-limit';

import { TICK_DRAINS_AT_ONCE, tickMailbox, type TickOutcome } from '../drain/tick';
import { toError } from '../errors';
import { contextLogger, deploymentOrLog } from './invocation';
import type { DeploymentRuntime } from './runtime';

export async function tick(
  getDeployment: () => DeploymentRuntime,
  _timer: Timer,
  context: InvocationContext,
): Promise<TickOutcome[]> {
  const log = contextLogger(context);
  const d = deploymentOrLog(getDeployment, log, 'The drain schedule');
  const drainSlot = pLimit(TICK_DRAINS_AT_ONCE);
  return Promise.all(
    d.mailboxes.map((rt) =>
      tickMailbox({ ...rt, log, drainSlot }).catch((err: unknown): TickOutcome => ({
        key: rt.config.key,
        mailbox: rt.config.mailbox,
        action: 'drained',
        error: toError(err),
      })),
    ),
  );
}
