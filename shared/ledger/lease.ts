/**
 * One drain of a mailbox at a time, across instances, apps and hosts, and what a run leaves for
 * the next one: a row in inboxqMailboxes (partition `lease`) with an owner and an expiry, taken and
 * renewed with etag-conditional writes.
 *
 * The row also carries the run's state that must outlive a crash:
 *   batch      the UIDs of the batch in progress, written before the batch starts. A run that dies
 *              leaves them, and the run that takes over the expired lease counts them as suspects.
 *   suspects   mails that were in the batch of a failed or killed run, or were held back, and how
 *              many times in a row (poison-mail detection, shared/drain/suspects.ts).
 *   reconcile  the last run did not end cleanly: the ledger may be behind the mailbox (a MOVE that
 *              went through while its answer was lost), and the next run reconciles it.
 *   backoffUntil  Exchange throttled the last run and asked to wait longer than a run waits: until
 *              then, a run takes no lease and makes no IMAP connection.
 * A clean run with nothing to pass on deletes the row; otherwise it leaves it expired, so the next
 * run takes it over at once.
 */
import type { TableClient } from '@azure/data-tables';

import { InboxqError } from '../errors';
import { clip } from '../storage/bounded';
import { type StorageClients, storageError, tableErrorCode } from '../storage/clients';
import { MAILBOXES_TABLE, partitionKey } from './rows';

const LEASE_PARTITION = 'lease';
/** Suspects a row keeps at most (the most failed first); a property holds 32K characters. */
const MAX_SUSPECTS = 200;

export interface Suspect {
  /** Failed or held runs in a row with this mail in the batch. */
  runs: number;
  /** Why, the last time (an error's description, bounded). */
  last: string;
}

/** `<uidValidity>:<uid>` -> suspect. */
export type Suspects = Map<string, Suspect>;

export function suspectKey(uidValidity: bigint | string, uid: number): string {
  return `${uidValidity.toString()}:${uid}`;
}

export interface RunState {
  suspects: Suspects;
  reconcile: boolean;
  /** The batch a killed run was working on (its UIDs were counted as suspects already). */
  killedBatch: { uidValidity: string; uids: number[] } | null;
  /** Epoch ms until which Exchange asked this mailbox's runs to stay away (0: no back-off). */
  backoffUntil: number;
}

/** Another run took the mailbox's run lease: this run stops where it is, the other continues. */
export class LeaseLostError extends InboxqError {
  override readonly code = 'LEASE_LOST';
}

interface LeaseRow {
  owner: string;
  expiresAt: number;
  batch?: string;
  suspects?: string;
  reconcile?: boolean;
  backoffUntil?: number;
}

function readSuspects(json: string | undefined): Suspects {
  const out: Suspects = new Map();
  try {
    const parsed = JSON.parse(json || '{}') as Record<string, Suspect>;
    for (const [k, v] of Object.entries(parsed))
      if (typeof v?.runs === 'number') out.set(k, { runs: v.runs, last: String(v.last ?? '') });
  } catch {
    // A row this code did not write: start over.
  }
  return out;
}

function writeSuspects(suspects: Suspects): string {
  const kept = [...suspects.entries()].sort((a, b) => b[1].runs - a[1].runs).slice(0, MAX_SUSPECTS);
  return JSON.stringify(Object.fromEntries(kept.map(([k, v]) => [k, { runs: v.runs, last: clip(v.last, 100) }])));
}

export class MailboxLease {
  /** The batch in progress, as the row says (null between batches). */
  private batch: { uidValidity: string; uids: number[] } | null = null;

  private constructor(
    private readonly table: TableClient,
    private readonly key: string,
    readonly owner: string,
    private readonly durationMs: number,
    private etag: string,
    private readonly now: () => number,
    /** What the previous run left. `suspects` and `reconcile` are this run's to change. */
    readonly state: RunState,
  ) {}

  static async acquire(
    storage: StorageClients,
    mailbox: string,
    owner: string,
    durationMs: number,
    now: () => number = Date.now,
  ): Promise<MailboxLease | { heldBy: string; until: number } | { backoffUntil: number }> {
    const table = await storage.table(MAILBOXES_TABLE);
    const key = partitionKey(mailbox);
    const entity = { partitionKey: LEASE_PARTITION, rowKey: key, owner, expiresAt: now() + durationMs };
    try {
      const res = await table.createEntity(entity);
      return new MailboxLease(table, key, owner, durationMs, res.etag ?? '*', now, {
        suspects: new Map(),
        reconcile: false,
        killedBatch: null,
        backoffUntil: 0,
      });
    } catch (err) {
      if (tableErrorCode(err) !== 'EntityAlreadyExists')
        throw storageError('Taking the run lease failed', err, mailbox);
    }
    let current;
    try {
      current = await table.getEntity<LeaseRow>(LEASE_PARTITION, key);
    } catch (err) {
      throw storageError('Reading the run lease failed', err, mailbox);
    }
    if (Number(current.expiresAt) > now()) return { heldBy: String(current.owner), until: Number(current.expiresAt) };
    if (Number(current.backoffUntil ?? 0) > now()) return { backoffUntil: Number(current.backoffUntil) };
    // Taken over: what the last run left is this run's to carry on.
    const state: RunState = {
      suspects: readSuspects(current.suspects),
      reconcile: current.reconcile === true,
      killedBatch: null,
      backoffUntil: 0,
    };
    if (current.batch) {
      try {
        const batch = JSON.parse(current.batch) as { uidValidity: string; uids: number[] };
        state.killedBatch = batch;
        state.reconcile = true;
        for (const uid of batch.uids) {
          const k = suspectKey(batch.uidValidity, uid);
          state.suspects.set(k, {
            runs: (state.suspects.get(k)?.runs ?? 0) + 1,
            last: 'the drain run stopped in the middle of its batch (killed, timed out or crashed)',
          });
        }
      } catch {
        state.reconcile = true;
      }
    }
    try {
      const res = await table.updateEntity(
        { ...entity, suspects: writeSuspects(state.suspects), reconcile: state.reconcile },
        'Replace',
        { etag: current.etag },
      );
      return new MailboxLease(table, key, owner, durationMs, res.etag ?? '*', now, state);
    } catch (err) {
      if (tableErrorCode(err) === 'UpdateConditionNotSatisfied')
        return { heldBy: 'another run (taken just now)', until: now() + durationMs };
      throw storageError('Taking over an expired run lease failed', err, mailbox);
    }
  }

  /** Extends the lease; throws LeaseLostError when another run has taken it. */
  async renew(): Promise<void> {
    await this.write(this.now() + this.durationMs);
  }

  /** Records the batch about to start (and extends the lease): a run killed during it leaves its UIDs for the next run. */
  async beginBatch(uidValidity: bigint, uids: number[]): Promise<void> {
    this.batch = { uidValidity: uidValidity.toString(), uids };
    await this.write(this.now() + this.durationMs);
  }

  /** The batch finished (its mails are settled, or the run is about to record its failure). */
  endBatch(): void {
    this.batch = null;
  }

  private async write(expiresAt: number): Promise<void> {
    try {
      const res = await this.table.updateEntity(
        {
          partitionKey: LEASE_PARTITION,
          rowKey: this.key,
          owner: this.owner,
          expiresAt,
          batch: this.batch ? JSON.stringify(this.batch) : '',
          suspects: writeSuspects(this.state.suspects),
          reconcile: this.state.reconcile,
          backoffUntil: this.state.backoffUntil,
        },
        'Replace',
        { etag: this.etag },
      );
      this.etag = res.etag ?? this.etag;
    } catch (err) {
      if (tableErrorCode(err) === 'UpdateConditionNotSatisfied')
        throw new LeaseLostError(`the run lease was taken over by another run`);
      throw err;
    }
  }

  /**
   * Ends the run. With nothing to pass on the row is deleted; otherwise it is left expired with the
   * suspects and the reconcile flag, for the next run to take over at once.
   */
  async release(): Promise<void> {
    this.batch = null;
    try {
      if (this.state.suspects.size === 0 && !this.state.reconcile && this.state.backoffUntil <= this.now())
        await this.table.deleteEntity(LEASE_PARTITION, this.key, { etag: this.etag });
      else await this.write(0);
    } catch {
      // Lost or unreachable: it expires on its own (and a kept batch is then counted by the next run).
    }
  }
}

/** Until when Exchange asked the mailbox's runs to stay away (epoch ms), or 0 (for `inboxq status`). */
export async function readBackoff(storage: StorageClients, mailbox: string, now: number): Promise<number> {
  const table = await storage.table(MAILBOXES_TABLE);
  try {
    const row = await table.getEntity<LeaseRow>(LEASE_PARTITION, partitionKey(mailbox));
    const until = Number(row.backoffUntil ?? 0);
    return until > now ? until : 0;
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return 0;
    throw storageError('Reading the run lease failed', err, mailbox);
  }
}
