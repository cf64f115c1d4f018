/**
 * The same-rows baseline of the benchmarks (issue 27): a bare drain client that also writes the
 * durable rows inboxq's guarantees rest on, through the same SDK and in the same transactions.
 */
import { randomUUID } from 'node:crypto';

import { TableClient } from '@azure/data-tables';
import type { QueueClient } from '@azure/storage-queue';
import type { ImapFlow } from 'imapflow';
import pLimit from 'p-limit';

import { encodeQueueMessage } from '../shared/contract/messages';

/**
 * The tables the same-rows baseline writes to: tables of its own, so that inboxq's tables grow by
 * inboxq's rows only (Azurite's inserts slow down as a table grows), and the baseline's by as many.
 */
export interface LedgerTables {
  messages: TableClient;
  conversations: TableClient;
}

/** The same-rows baseline's two tables, `<prefix>Messages` and `<prefix>Conversations`, on the Storage the connection string names. */
export function ledgerTables(connectionString: string, prefix: string): LedgerTables {
  const table = (name: string) =>
    TableClient.fromConnectionString(connectionString, name, { allowInsecureConnection: true });
  return { messages: table(`${prefix}Messages`), conversations: table(`${prefix}Conversations`) };
}

/** Creates them. */
export async function createLedgerTables(tables: LedgerTables): Promise<void> {
  for (const t of [tables.messages, tables.conversations]) await t.createTable();
}

/**
 * The bare client plus the durable rows inboxq writes, through the same SDK and in the same
 * transactions per batch of 100: each mail claimed (insert), its conversation started (insert), then
 * recorded as queued (replace, on the claim's etag) after the queue sends, and marked removed
 * (merge) after the delete. The fair baseline for the drain's CPU (issue 27): what the ledger's
 * guarantee costs in the SDK is in both sides; what inboxq adds on top (parsing, the sender policy,
 * threads, the task message) is the difference. The row values are the same kind and length.
 */
export async function bareDrainWithRows(
  client: ImapFlow,
  mailbox: string,
  queue: QueueClient,
  tables: LedgerTables,
  /** Queue sends in flight at once: 1 for the CPU baseline, 16 for the round-trip one (like the pipelined client). */
  inFlight = 1,
): Promise<number> {
  const limit = pLimit(inFlight);
  const { uidValidity } = await client.mailboxOpen('INBOX');
  const pk = encodeURIComponent(mailbox);
  const now = () => new Date().toISOString();
  let n = 0;
  let batch: { uid: number; taskId: string; messageId: string; subject: string; from: string; etag?: string }[] = [];
  const removedLater: { uid: number; taskId: string }[] = [];
  const flush = async () => {
    if (batch.length === 0) return;
    const entity = (m: (typeof batch)[number], state: string, extra: Record<string, unknown> = {}) => ({
      partitionKey: pk,
      rowKey: m.taskId,
      mailbox,
      state,
      removed: false,
      identity: `mid:${m.messageId}`,
      messageId: m.messageId,
      headerSha256: m.taskId + m.taskId,
      uid: m.uid,
      uidValidity: String(uidValidity),
      sender: '',
      subject: m.subject,
      inReplyTo: '',
      references: '[]',
      conversationId: '',
      reasons: '[]',
      receivedAt: now(),
      claimedAt: now(),
      updatedAt: now(),
      ...extra,
    });
    const claimed = await tables.messages.submitTransaction(batch.map((m) => ['create', entity(m, 'claimed')]));
    for (const m of batch) m.etag = claimed.getResponseForEntity(m.taskId)?.etag;
    await tables.conversations.submitTransaction(
      batch.map((m) => [
        'create',
        {
          partitionKey: pk,
          rowKey: `c.${m.taskId.slice(0, 24)}`,
          conversationId: m.taskId.slice(0, 24),
          participants: JSON.stringify([m.from]),
          subject: m.subject,
          createdAt: now(),
          updatedAt: now(),
          taskIds: JSON.stringify([m.taskId]),
        },
      ]),
    );
    await Promise.all(
      batch.map((m) => limit(() => queue.sendMessage(encodeQueueMessage({ uid: m.uid, taskId: m.taskId })))),
    );
    await tables.messages.submitTransaction(
      batch.map((m) => [
        'update',
        entity(m, 'queued', {
          sender: m.from,
          conversationId: m.taskId.slice(0, 24),
          reasons: JSON.stringify([
            `DMARC pass for partner.test in the first Authentication-Results header (no authserv-id)`,
            `${m.from} is an authorized sender`,
          ]),
          queuedAt: now(),
        }),
        'Replace',
        { etag: m.etag ?? '*' },
      ]),
    );
    removedLater.push(...batch.map(({ uid, taskId }) => ({ uid, taskId })));
    n += batch.length;
    batch = [];
  };
  for await (const m of client.fetch('1:*', { uid: true, source: true, envelope: true })) {
    batch.push({
      uid: m.uid,
      taskId: randomUUID().replace(/-/g, ''),
      messageId: m.envelope?.messageId ?? '',
      subject: m.envelope?.subject ?? '',
      from: m.envelope?.from?.[0]?.address ?? '',
    });
    if (batch.length === 100) await flush();
  }
  await flush();
  await client.messageDelete('1:*');
  for (let i = 0; i < removedLater.length; i += 100)
    await tables.messages.submitTransaction(
      removedLater.slice(i, i + 100).map((m) => [
        'update',
        {
          partitionKey: pk,
          rowKey: m.taskId,
          removed: true,
          uid: m.uid,
          updatedAt: now(),
          location: 'inboxq-processed',
        },
        'Merge',
      ]),
    );
  return n;
}
