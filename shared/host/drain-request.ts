/**
 * A drain request taken from the drain-requests queue (the schedule's tick leaves a busy, slow or
 * failing mailbox to it: shared/drain/tick.ts): the mailbox it names is drained.
 *
 * A failed drain is logged (with the mailbox and what to do), recorded in the ledger and counted
 * in the metrics, and not thrown: retrying at once would only repeat a refused login or an
 * unreachable server, and the next tick of the schedule tries again anyway.
 */
import type { InvocationContext } from '@azure/functions';
import pLimit from 'p-limit';

import { drainRequestSchema } from '../contract/messages';
import { drainMailbox, type DrainSummary } from '../drain/drain';
import { toError } from '../errors';
import { contextLogger, deploymentOrLog } from './invocation';
import type { DeploymentRuntime } from './runtime';

/**
 * Drains this instance runs at once, whatever host.json's batchSize hands it: each run holds up to
 * two batches of mail (the one being stored and the next, fetched ahead) in memory, so eight at
 * once could outgrow a 512-MB instance. The others wait their turn in their invocations (one
 * instance's overlapping executions are billed once); the scale controller adds instances for a
 * deep queue.
 */
export const DRAINS_AT_ONCE = 2;
const drainsHere = pLimit(DRAINS_AT_ONCE);

/** What became of one drain request. A failed drain is reported here, not thrown. */
export interface DrainOutcome {
  key: string;
  mailbox: string;
  summary?: DrainSummary;
  error?: Error;
  /** Why nothing was done: the request was unreadable, or names a mailbox these settings don't serve. */
  skipped?: string;
}

export async function drainRequested(
  getDeployment: () => DeploymentRuntime,
  message: unknown,
  context: InvocationContext,
): Promise<DrainOutcome> {
  const log = contextLogger(context);
  const parsed = drainRequestSchema.safeParse(typeof message === 'string' ? safeJson(message) : message);
  if (!parsed.success) {
    log.error('A drain request does not follow the contract and is dropped', {
      issues: parsed.error.issues.map((i) => i.path.join('.')).join(', '),
    });
    return { key: '', mailbox: '', skipped: 'unreadable request' };
  }
  const { key, mailbox } = parsed.data;
  let d: DeploymentRuntime;
  try {
    d = deploymentOrLog(getDeployment, log, `The drain of ${mailbox}`);
  } catch (err) {
    // Logged with every problem; retrying the request can't help until the settings change.
    return { key, mailbox, error: toError(err), skipped: 'invalid settings' };
  }
  const rt = d.find(key);
  if (!rt || rt.config.mailbox !== mailbox) {
    log.warn('A drain request names a mailbox these settings do not serve; dropped', { key, mailbox });
    return { key, mailbox, skipped: 'mailbox not served here' };
  }
  try {
    return { key, mailbox, summary: await drainsHere(() => drainMailbox({ ...rt, log })) };
  } catch (err) {
    // drainMailbox has logged the failure with its hint and recorded it in the ledger.
    return { key, mailbox, error: toError(err) };
  }
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
