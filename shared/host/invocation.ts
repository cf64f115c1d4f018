/**
 * What every handler does with its InvocationContext: logs through it, reads the trigger's
 * metadata, and gets the deployment's runtime (or logs, naming every setting at fault, why it can't).
 */
import type { InvocationContext } from '@azure/functions';

import { describeError } from '../errors';
import { createLogger, type Logger } from '../telemetry/log';
import type { DeploymentRuntime } from './runtime';

export function contextLogger(context: InvocationContext): Logger {
  return createLogger({
    info: (l) => context.info(l),
    warn: (l) => context.warn(l),
    error: (l) => context.error(l),
  });
}

/** The deployment, or a logged ConfigError naming every mailbox and setting at fault. */
export function deploymentOrLog(getDeployment: () => DeploymentRuntime, log: Logger, what: string): DeploymentRuntime {
  try {
    return getDeployment();
  } catch (err) {
    log.error(`${what} can't start: ${describeError(err)}`);
    throw err;
  }
}

/** A queue trigger's delivery: how many times the host has handed the message over, and its id. */
export function queueDelivery(context: InvocationContext): { dequeueCount: number; queueMessageId: string } {
  const id = context.triggerMetadata?.['id'];
  return {
    dequeueCount: Number(context.triggerMetadata?.['dequeueCount'] ?? 1),
    queueMessageId: typeof id === 'string' ? id : '',
  };
}
