/**
 * The SMTP connections of a mailbox, shared by every instance that sends for it. Exchange Online
 * allows 3 concurrent SMTP AUTH connections per mailbox and answers a fourth with `432 4.3.2
 * Concurrent connections limit exceeded`; Flex Consumption runs the reply function on as many
 * instances as the queue asks for. So an instance holds a slot for each connection it may open:
 * one row per slot in inboxqMailboxes (partition `smtp`, row `<mailbox>.<n>`), held for `ttlMs`
 * and renewed while it sends, given back when its connections close. A slot of an instance that
 * died is free again when its time is up.
 *
 * An instance alone may hold every slot; past its fair share (SMTP_FAIR_SHARE) it holds a slot only
 * while no other instance wants one. An instance that finds no free slot says so (row
 * `<mailbox>.wanted`, for WANT_MS), and an instance holding more than its share gives the surplus
 * back when it sees that (shared/reply/smtp.ts asks twice a second while it sends).
 */
import { randomUUID } from 'node:crypto';

import { odata, type TableClient } from '@azure/data-tables';

import { type StorageClients, storageError, tableErrorCode } from '../storage/clients';
import { MAILBOXES_TABLE, partitionKey } from './rows';

/** Exchange Online: concurrent SMTP AUTH connections per mailbox. */
export const SMTP_CONNECTIONS_PER_MAILBOX = 3;
/** Slots an instance holds whatever others want: two instances can always share the mailbox's 3. */
export const SMTP_FAIR_SHARE = 2;
/** How long an instance's word that it found no free slot counts. */
const WANT_MS = 30_000;
const PARTITION = 'smtp';
/** This process, as the holder of its slots. */
const INSTANCE = randomUUID();

interface Held {
  slot: number;
  etag: string;
}

/** A slot row (holder, expiresAt) or the word row of an instance that found none (holder, at). */
interface SlotRow {
  rowKey: string;
  holder?: string;
  expiresAt?: number;
  at?: number;
  etag?: string;
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

  /**
   * Takes free slots until this instance holds `want` (or none is free); past `fairShare`, only
   * while no other instance said it wants one. Returns how many it holds; when none, it says it
   * wants one (the holders of a surplus give it back).
   */
  async acquire(want: number, fairShare = want): Promise<number> {
    const table = await this.table();
    const holder = this.options.holder ?? INSTANCE;
    const until = this.now() + this.ttlMs;
    const slots = this.options.slots ?? SMTP_CONNECTIONS_PER_MAILBOX;
    try {
      // One read of the mailbox's rows (its slots, and the word of an instance that found none),
      // then the free slots taken together, each on the etag read: one another instance took
      // meanwhile is skipped. Two round trips, whatever the number of slots.
      const prefix = partitionKey(this.mailbox);
      const rows = new Map<string, SlotRow>();
      const filter = odata`PartitionKey eq ${PARTITION} and RowKey ge ${`${prefix}.`} and RowKey lt ${`${prefix}/`}`;
      for await (const row of table.listEntities<SlotRow>({ queryOptions: { filter } })) rows.set(row.rowKey, row);
      const limit = this.wantedByOthers(rows.get(this.wantKey()), holder)
        ? Math.min(want, Math.max(fairShare, this.held.length))
        : want;
      const free: { slot: number; row: SlotRow | undefined }[] = [];
      for (let slot = 0; slot < slots && this.held.length + free.length < limit; slot++) {
        if (this.held.some((h) => h.slot === slot)) continue;
        const row = rows.get(this.rowKey(slot));
        if (!row || row.holder === holder || Number(row.expiresAt ?? 0) <= this.now()) free.push({ slot, row });
      }
      const taken = await Promise.all(
        free.map(async ({ slot, row }): Promise<Held | undefined> => {
          const entity = { partitionKey: PARTITION, rowKey: this.rowKey(slot), holder, expiresAt: until };
          try {
            const res = row
              ? await table.updateEntity(entity, 'Replace', { etag: row.etag ?? '*' })
              : await table.createEntity(entity);
            return { slot, etag: res.etag ?? '*' };
          } catch (err) {
            // Another instance took it first.
            const code = tableErrorCode(err);
            if (code !== 'EntityAlreadyExists' && code !== 'UpdateConditionNotSatisfied') throw err;
            return undefined;
          }
        }),
      );
      for (const h of taken) if (h) this.held.push(h);
      if (this.held.length === 0) {
        const wanted = { partitionKey: PARTITION, rowKey: this.wantKey(), holder, at: this.now() };
        await table.upsertEntity(wanted, 'Replace');
      }
    } catch (err) {
      throw storageError('Taking an SMTP connection slot failed', err, this.mailbox);
    }
    if (this.held.length > 0) this.heldUntil = until;
    return this.held.length;
  }

  /** Whether another instance found no free slot within WANT_MS (one read). */
  async othersWant(): Promise<boolean> {
    let row: SlotRow | undefined;
    try {
      row = await (await this.table()).getEntity<SlotRow>(PARTITION, this.wantKey());
    } catch (err) {
      if ((err as { statusCode?: number }).statusCode !== 404)
        throw storageError('Reading whether another instance waits for an SMTP connection failed', err, this.mailbox);
    }
    return this.wantedByOthers(row, this.options.holder ?? INSTANCE);
  }

  /** Gives back the slots held past the first `keep` (best effort, as release). */
  async releaseBeyond(keep: number): Promise<void> {
    const surplus = this.held.slice(keep);
    this.held = this.held.slice(0, keep);
    await this.giveBack(surplus);
  }

  private wantKey(): string {
    return `${partitionKey(this.mailbox)}.wanted`;
  }

  /** Whether the word row says another instance found no free slot within WANT_MS. */
  private wantedByOthers(row: SlotRow | undefined, holder: string): boolean {
    return row !== undefined && row.holder !== holder && Number(row.at ?? 0) > this.now() - WANT_MS;
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
    await this.giveBack(held);
  }

  private async giveBack(held: Held[]): Promise<void> {
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
