/**
 * The key task ids are derived under (ids.ts): 32 random bytes, created at the deployment's first
 * drain, kept in the table inboxqKeys, which only the app's identity may read (a mailbox's worker is
 * granted its own queues, container and table, nothing else: infra/app/worker-roles.bicep). A worker
 * sees task ids; it can't compute the task id of a mail it has not been given.
 *
 * A deployment that had drained mail before the key existed has rows under the task ids of before
 * (sha256 without a key). For as long as such rows may still be there (the mail retention, or for
 * ever without one), the drain looks a mail up under its old id too, so a mail claimed before the
 * key, and a copy of it arriving after, keep their one task; threads and trace find old mails the
 * same way. A new deployment never looks.
 */
import { randomBytes } from 'node:crypto';

import type { InboxqConfig } from '../config/types';
import { MESSAGES_TABLE } from '../ledger/rows';
import { type StorageClients, storageError, tableErrorCode } from '../storage/clients';
import { deriveTaskId, taskIdOfOwnMessageId } from './ids';

export const KEYS_TABLE = 'inboxqKeys';
const KEY_ROW = { partitionKey: 'task-id', rowKey: 'v1' };

export interface TaskIdKey {
  secret: Buffer;
  createdAt: string;
  /** Ledger rows were there when the key was made: they are under the task ids of before. */
  rowsBefore: boolean;
}

const loaded = new WeakMap<StorageClients, Promise<TaskIdKey | null>>();

/**
 * The deployment's key, read once per process (per set of Storage clients); created when there is
 * none, unless `create` is false (the CLI, which creates nothing: then null, and ids are derived as
 * before the key).
 */
export function taskIdKey(
  storage: StorageClients,
  options: { create?: boolean; mailbox?: string } = {},
): Promise<TaskIdKey | null> {
  let p = loaded.get(storage);
  if (!p) {
    p = readOrCreate(storage, options.create ?? true, options.mailbox).catch((err: unknown) => {
      loaded.delete(storage);
      throw err;
    });
    loaded.set(storage, p);
  }
  return p;
}

function fromEntity(e: Record<string, unknown>): TaskIdKey {
  return {
    secret: Buffer.from(String(e['secret']), 'base64'),
    createdAt: String(e['createdAt']),
    rowsBefore: e['rowsBefore'] === true,
  };
}

async function readOrCreate(storage: StorageClients, create: boolean, mailbox?: string): Promise<TaskIdKey | null> {
  const table = await storage.table(KEYS_TABLE);
  const read = async () => {
    try {
      return fromEntity(await table.getEntity<Record<string, unknown>>(KEY_ROW.partitionKey, KEY_ROW.rowKey));
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode === 404) return null;
      throw storageError("Can't read the task id key", err, mailbox);
    }
  };
  const existing = await read();
  if (existing || !create) return existing;
  let rowsBefore: boolean;
  try {
    const messages = await storage.table(MESSAGES_TABLE);
    const page = await messages
      .listEntities({ queryOptions: { select: ['PartitionKey'] } })
      .byPage({ maxPageSize: 1 })
      .next();
    rowsBefore = !page.done && page.value.length > 0;
  } catch (err) {
    throw storageError("Can't look for ledger rows before creating the task id key", err, mailbox);
  }
  const key: TaskIdKey = { secret: randomBytes(32), createdAt: new Date().toISOString(), rowsBefore };
  try {
    await table.createEntity({
      ...KEY_ROW,
      secret: key.secret.toString('base64'),
      createdAt: key.createdAt,
      rowsBefore,
    });
    return key;
  } catch (err) {
    // Another instance made it first: theirs is the key.
    if (tableErrorCode(err) !== 'EntityAlreadyExists') throw storageError("Can't create the task id key", err, mailbox);
    const theirs = await read();
    if (!theirs) throw storageError("Can't read the task id key another instance created", err, mailbox);
    return theirs;
  }
}

/** How one mailbox's task ids are derived: under the deployment's key, and the ids of before while they may be in use. */
export class TaskIds {
  private readonly legacyUntil: number;

  constructor(
    readonly mailbox: string,
    private readonly key: TaskIdKey | null,
    retentionDays: number,
  ) {
    this.legacyUntil =
      key === null || !key.rowsBefore
        ? 0
        : retentionDays > 0
          ? Date.parse(key.createdAt) + (retentionDays + 1) * 86_400_000
          : Number.POSITIVE_INFINITY;
  }

  /** The task id of a mail claimed under this identity. */
  of(identity: string): string {
    return deriveTaskId(this.key?.secret ?? null, this.mailbox, identity);
  }

  /** The id the same mail had before the key, while rows of before may still be there; else null. */
  before(identity: string, now = Date.now()): string | null {
    return this.key !== null && now < this.legacyUntil ? deriveTaskId(null, this.mailbox, identity) : null;
  }

  /**
   * The task ids a Message-ID may belong to, the likeliest first: the one inside inboxq's own
   * Message-ID; else the task id of a received (accepted) mail with it, now and before the key.
   */
  ofMessageId(messageId: string, now = Date.now()): string[] {
    const own = taskIdOfOwnMessageId(messageId);
    if (own) return [own];
    const identity = `mid:${messageId.trim()}`;
    const before = this.before(identity, now);
    return before ? [this.of(identity), before] : [this.of(identity)];
  }
}

/** The mailbox's task ids; `create: false` (the CLI) derives as before the key when there is none. */
export async function taskIdsFor(
  context: { storage: StorageClients; config: Pick<InboxqConfig, 'mailbox' | 'drain'> },
  options: { create?: boolean } = {},
): Promise<TaskIds> {
  const key = await taskIdKey(context.storage, { ...options, mailbox: context.config.mailbox });
  return new TaskIds(context.config.mailbox, key, context.config.drain.retentionDays);
}
