/**
 * What a warm Functions instance keeps between invocations: the validated config of every mailbox,
 * their token providers (MSAL's cache), the Storage clients, the IMAP session kept per mailbox and
 * what the drain schedule remembers of it. Built once per set of settings.
 *
 * The app reads process.env in two places: here (every mailbox's settings, through
 * `loadDeployment`) and functions/startup.ts (APPLICATIONINSIGHTS_*, for telemetry). The Azure SDK
 * reads its own AZURE_* settings (README, Settings). The CLI takes its environment as an argument.
 */
import { findMailbox, loadDeployment } from '../config/deployment';
import type { Env } from '../config/types';
import type { MailboxContext } from '../context';
import { type ExchangeTokenProvider, tokenProviderFor } from '../credentials/token';
import { MailboxWatch } from '../drain/watch';
import { Ledger } from '../ledger/ledger';
import { WarmSession } from '../mailbox/warm';
import { createStorageClients } from '../storage/clients';

/** One mailbox as a warm instance keeps it: its MailboxContext but for the invocation's logger (`{ ...rt, log }`). */
export interface Runtime extends Omit<MailboxContext, 'log' | 'now'> {
  tokens: ExchangeTokenProvider;
  imapSession: WarmSession;
  /** What the drain schedule remembers of the mailbox between ticks (shared/drain/watch.ts). */
  watch: MailboxWatch;
}

/** Every mailbox of the deployment, found by key or address. */
export interface DeploymentRuntime {
  mailboxes: Runtime[];
  /** The mailbox with this key or address, if the deployment serves it. */
  find(mailbox: string): Runtime | undefined;
}

const deployments = new Map<string, DeploymentRuntime>();

/** The settings a deployment is built from (inboxq's own and the Storage connection), as a key. */
function settingsKey(env: Env): string {
  return JSON.stringify(
    Object.entries(env)
      .filter(
        ([name, value]) =>
          value !== undefined && (name.startsWith('INBOXQ_') || name.startsWith('AzureWebJobsStorage')),
      )
      .sort(([x], [y]) => (x < y ? -1 : 1)),
  );
}

/**
 * Every mailbox of these settings, validated once per set of settings: the lookup costs some
 * microseconds, a validation more than a millisecond (it builds each mailbox's schema), which an
 * invocation should not pay. A host that runs several sets of settings in one process (the
 * end-to-end tests) gets each its own runtime, with its token cache and clients.
 */
export function deploymentFor(env: Env): DeploymentRuntime {
  const key = settingsKey(env);
  let deployment = deployments.get(key);
  if (!deployment) {
    const { mailboxes } = loadDeployment(env);
    const runtimes = mailboxes.map((config): Runtime => {
      const storage = createStorageClients(config.storage, config.mailbox);
      return {
        config,
        tokens: tokenProviderFor(config),
        storage,
        ledger: new Ledger(storage, config.mailbox),
        imapSession: new WarmSession(config.imap.keepWarmMs),
        watch: new MailboxWatch(config.key),
      };
    });
    deployment = {
      mailboxes: runtimes,
      find: (mailbox) => {
        const config = findMailbox(mailboxes, mailbox);
        return runtimes.find((rt) => rt.config === config);
      },
    };
    deployments.set(key, deployment);
  }
  return deployment;
}

/**
 * Every mailbox this Functions instance serves, from its app settings as they are now: validated
 * again only when inboxq's own (INBOXQ_*, AzureWebJobsStorage*) changed, which in Azure means a
 * restart anyway.
 */
export function processDeployment(): DeploymentRuntime {
  return deploymentFor(process.env);
}
