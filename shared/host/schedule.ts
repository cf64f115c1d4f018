/**
 * The drain schedule (a timer, one instance at a time): one drain request per mailbox on the
 * drain-requests queue, so each mailbox is drained by an invocation of its own and the host spreads
 * mailboxes over instances; a slow or broken mailbox never holds up another.
 */
import type { InvocationContext, Timer } from '@azure/functions';

import { DRAIN_REQUESTS_QUEUE, type DrainRequest } from '../contract/messages';
import { sendQueueMessage } from '../storage/queues';
import { contextLogger, deploymentOrLog } from './invocation';
import type { DeploymentRuntime } from './runtime';

export async function requestDrains(
  getDeployment: () => DeploymentRuntime,
  timer: Timer,
  context: InvocationContext,
): Promise<DrainRequest[]> {
  const log = contextLogger(context);
  const d = deploymentOrLog(getDeployment, log, 'The drain schedule');
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
}
