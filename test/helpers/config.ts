/** Test helpers over the settings: the config of one mailbox, as a test that looks at one wants it. */
import { findMailbox, loadDeployment, notConfiguredHere } from '../../shared/config/deployment';
import type { Env, InboxqConfig } from '../../shared/config/types';
import { ConfigError } from '../../shared/errors';

/**
 * The config of a deployment that serves one mailbox (and of tests and tools that look at one):
 * its only mailbox, or, with several, the one named by key or address.
 */
export function loadConfig(env: Env, mailbox?: string): InboxqConfig {
  const { mailboxes } = loadDeployment(env);
  if (mailbox === undefined) {
    if (mailboxes.length === 1) return mailboxes[0]!;
    throw new ConfigError([
      `this deployment serves ${mailboxes.length} mailboxes (${mailboxes.map((m) => m.key).join(', ')}): name one`,
    ]);
  }
  const found = findMailbox(mailboxes, mailbox);
  if (!found) throw new ConfigError([notConfiguredHere(mailbox, mailboxes)]);
  return found;
}
