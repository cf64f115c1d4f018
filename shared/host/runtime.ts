/**
 * What a warm Functions instance keeps between invocations: the validated config, the token
 * provider (MSAL's cache), and the Storage clients. Built once per set of settings.
 *
 * This is the one place that reads process.env (through `loadConfig`).
 */
import { loadConfig, type Env, type InboxqConfig } from '../config/settings';
import { tokenProviderFor, type ExchangeTokenProvider } from '../credentials/token';
import { Ledger } from '../ledger/ledger';
import { createStorageClients, type StorageClients } from '../storage/clients';

export interface Runtime {
  config: InboxqConfig;
  tokens: ExchangeTokenProvider;
  storage: StorageClients;
  ledger: Ledger;
}

const runtimes = new Map<string, Runtime>();

export function runtimeFor(env: Env): Runtime {
  const config = loadConfig(env);
  const key = JSON.stringify(config, (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString('base64') : v));
  let rt = runtimes.get(key);
  if (!rt) {
    const storage = createStorageClients(config.storage, config.mailbox);
    rt = { config, tokens: tokenProviderFor(config), storage, ledger: new Ledger(storage, config.mailbox) };
    runtimes.set(key, rt);
  }
  return rt;
}

let fromProcess: Runtime | undefined;

/** The runtime of this Functions instance, from its app settings. */
export function processRuntime(): Runtime {
  fromProcess ??= runtimeFor(process.env);
  return fromProcess;
}
