/**
 * What a warm Functions instance keeps between invocations: the validated config of every mailbox,
 * their token providers (MSAL's cache), and the Storage clients. Built once per set of settings.
 *
 * This is the one place that reads process.env (through `loadDeployment`).
 */
import { findMailbox, loadDeployment } from '../config/deployment';
import type { Env, InboxqConfig } from '../config/types';
import { type ExchangeTokenProvider, tokenProviderFor } from '../credentials/token';
import { Ledger } from '../ledger/ledger';
import { createStorageClients, type StorageClients } from '../storage/clients';

/** One mailbox's runtime. */
export interface Runtime {
  config: InboxqConfig;
  tokens: ExchangeTokenProvider;
  storage: StorageClients;
  ledger: Ledger;
}

/** Every mailbox of the deployment, found by key or address. */
export interface DeploymentRuntime {
  mailboxes: Runtime[];
  /** The mailbox with this key or address, if the deployment serves it. */
  find(mailbox: string): Runtime | undefined;
}

const deployments = new Map<string, DeploymentRuntime>();

export function deploymentFor(env: Env): DeploymentRuntime {
  const { mailboxes } = loadDeployment(env);
  const key = JSON.stringify(mailboxes, (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString('base64') : v));
  let deployment = deployments.get(key);
  if (!deployment) {
    const runtimes = mailboxes.map((config): Runtime => {
      const storage = createStorageClients(config.storage, config.mailbox);
      return { config, tokens: tokenProviderFor(config), storage, ledger: new Ledger(storage, config.mailbox) };
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

/** The runtime of a deployment that serves one mailbox (tests and tools that look at one). */
export function runtimeFor(env: Env, mailbox?: string): Runtime {
  const deployment = deploymentFor(env);
  if (mailbox !== undefined) {
    const rt = deployment.find(mailbox);
    if (!rt) throw new Error(`mailbox ${mailbox} is not configured in these settings`);
    return rt;
  }
  if (deployment.mailboxes.length !== 1)
    throw new Error(`these settings serve ${deployment.mailboxes.length} mailboxes: name one`);
  return deployment.mailboxes[0]!;
}

let fromProcess: DeploymentRuntime | undefined;

/** Every mailbox this Functions instance serves, from its app settings. */
export function processDeployment(): DeploymentRuntime {
  fromProcess ??= deploymentFor(process.env);
  return fromProcess;
}
