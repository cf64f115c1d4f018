/** The runtime of one mailbox, for the tools, scripts and tests that look at one (never the app). */
import { notConfiguredHere } from '../shared/config/deployment';
import type { Env } from '../shared/config/types';
import { ConfigError } from '../shared/errors';
import { deploymentFor, type Runtime } from '../shared/host/runtime';

export function runtimeFor(env: Env, mailbox?: string): Runtime {
  const deployment = deploymentFor(env);
  if (mailbox !== undefined) {
    const rt = deployment.find(mailbox);
    if (!rt)
      throw new ConfigError([
        notConfiguredHere(
          mailbox,
          deployment.mailboxes.map((m) => m.config),
        ),
      ]);
    return rt;
  }
  if (deployment.mailboxes.length !== 1)
    throw new ConfigError([
      `these settings serve ${deployment.mailboxes.length} mailboxes (${deployment.mailboxes.map((m) => m.config.key).join(', ')}): name one`,
    ]);
  return deployment.mailboxes[0]!;
}
