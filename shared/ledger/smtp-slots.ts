/**
 * The SMTP connections of a mailbox, shared by every instance that sends for it. Exchange Online
 * allows 3 concurrent SMTP AUTH connections per mailbox and answers a fourth with `432 4.3.2
 * Concurrent connections limit exceeded`; Flex Consumption runs the reply function on as many
 * instances as the queue asks for. So an instance holds a slot for each connection it may open:
 * one row per slot in inboxqMailboxes (partition `smtp`, row `<mailbox>.<n>`), held for `ttlMs`
 * and renewed while it sends, given back when its connections close. A slot of an instance that
 * died is free again when its time is up.
 */
import { randomUUID } from 'node:crypto';

import type { TableClient } from '@azure/data-tables';

import { type StorageClients, storageError, tableErrorCode } from '../storage/clients';
import { MAILBOXES_TABLE, partitionKey } from './rows';

/** Exchange Online: concurrent SMTP AUTH connections per mailbox. */
export const SMTP_CONNECTIONS_PER_MAILBOX = 3;
const PARTITION = 'smtp';
/** This process, as the holder of its slots. */
const INSTANCE = randomUUID();

interface Held {
  slot: number;
  etag: string;
}

export class SmtpSlots {
  private held: Held[] = [];
  private heldUntil = 0;

  constructor(
    private readonly storage: StorageClients,
    private readonly mailbox: string,
    private readonly options: { ttlMs?: number; holder?: string; now?: () => number; slots?: number } = {},
  ) {}

  private get ttlMs(): number {
    return this.options.ttlMs ?? 60_000;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  private async table(): Promise<TableClient> {
    return this.storage.table(MAILBOXES_TABLE);
  }

  private rowKey(slot: number): string {
    return `${partitionKey(this.mailbox)}.${slot}`;
  }

  /** Slots held now. */
  get count(): number {
    return this.held.length;
  }

  /** Takes free slots until this instance holds `want` (or none is free); returns how many it holds. */
  async acquire(want: number): Promise<number> {
    const table = await this.table();
    const holder = this.options.holder ?? INSTANCE;
    const until = this.now() + this.ttlMs;
    const slots = this.options.slots ?? SMTP_CONNECTIONS_PER_MAILBOX;
    try {
      for (let slot = 0; slot < slots && this.held.length < want; slot++) {
        if (this.held.some((h) => h.slot === slot)) continue;
        const entity = { partitionKey: PARTITION, rowKey: this.rowKey(slot), holder, expiresAt: until };
        let row: { holder?: string; expiresAt?: number; etag?: string } | undefined;
        try {
          row = await table.getEntity<{ holder: string; expiresAt: number }>(PARTITION, this.rowKey(slot));
        } catch (err) {
          if ((err as { statusCode?: number }).statusCode !== 404) throw err;
        }
        try {
          if (!row) {
            const res = await table.createEntity(entity);
            this.held.push({ slot, etag: res.etag ?? '*' });
          } else if (row.holder === holder || Number(row.expiresAt ?? 0) <= this.now()) {
            const res = await table.updateEntity(entity, 'Replace', { etag: row.etag ?? '*' });
            this.held.push({ slot, etag: res.etag ?? '*' });
          }
        } catch (err) {
          // Another instance took it first.
          const code = tableErrorCode(err);
          if (code !== 'EntityAlreadyExists' && code !== 'UpdateConditionNotSatisfied') throw err;
        }
      }
    } catch (err) {
      throw storageError('Taking an SMTP connection slot failed', err, this.mailbox);
    }
    if (this.held.length > 0) this.heldUntil = until;
    return this.held.length;
  }

  private renewing: Promise<number> | undefined;

  /** Renews the slots held when half their time is gone; a slot another instance took meanwhile is dropped. */
  renew(): Promise<number> {
    if (this.held.length === 0 || this.heldUntil - this.now() > this.ttlMs / 2)
      return Promise.resolve(this.held.length);
    this.renewing ??= this.renewNow().finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  private async renewNow(): Promise<number> {
    const table = await this.table();
    const holder = this.options.holder ?? INSTANCE;
    const until = this.now() + this.ttlMs;
    const kept: Held[] = [];
    for (const h of this.held) {
      try {
        const res = await table.updateEntity(
          { partitionKey: PARTITION, rowKey: this.rowKey(h.slot), holder, expiresAt: until },
          'Replace',
          { etag: h.etag },
        );
        kept.push({ slot: h.slot, etag: res.etag ?? '*' });
      } catch (err) {
        if (tableErrorCode(err) !== 'UpdateConditionNotSatisfied')
          throw storageError('Renewing an SMTP connection slot failed', err, this.mailbox);
      }
    }
    this.held = kept;
    this.heldUntil = until;
    return kept.length;
  }

  /** Gives every slot back (best effort: an unreleased slot is free when its time is up). */
  async release(): Promise<void> {
    const held = this.held;
    this.held = [];
    if (held.length === 0) return;
    const table = await this.table().catch(() => undefined);
    for (const h of held) {
      await table
        ?.updateEntity({ partitionKey: PARTITION, rowKey: this.rowKey(h.slot), holder: '', expiresAt: 0 }, 'Replace', {
          etag: h.etag,
        })
        .catch(() => undefined);
    }
  }
}
