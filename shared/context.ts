/**
 * What every piece of work on a mailbox is given: its config, its token source, its Storage and
 * ledger, and the logger of the invocation. A warm instance keeps the first four per mailbox
 * (host/runtime.ts: a `Runtime`); each invocation adds its logger. Drains, replies and
 * acknowledgements take this, plus the hooks of their own (`DrainDeps`, `ReplyDeps`).
 */
import type { InboxqConfig } from './config/types';
import type { TokenSource } from './credentials/token';
import type { Ledger } from './ledger/ledger';
import type { WarmSession } from './mailbox/warm';
import type { StorageClients } from './storage/clients';
import type { Logger } from './telemetry/log';

export interface MailboxContext {
  config: InboxqConfig;
  tokens: TokenSource;
  ledger: Ledger;
  storage: StorageClients;
  log: Logger;
  /** The mailbox's IMAP session kept between drains by a warm instance; without it, one per drain. */
  imapSession?: WarmSession;
  /** The clock (tests move it past a lease). */
  now?: () => number;
}
