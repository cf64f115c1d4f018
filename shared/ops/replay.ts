/**
 * `inboxq replay replies-poison`: sends poisoned replies again, once their cause is fixed.
 *
 * A poisoned reply is in one of two places: still on a poison queue (its mailbox's
 * `replies-<key>-poison`, or the shared replies-poison) when the poisoned-reply function has not
 * run, or kept by that function as a blob (shared/reply/parked.ts) after it marked the task failed.
 * Both go back on the mailbox's replies queue; the reply function then sends
 * each, and its ledger row keeps a reply that was sent after all from going out twice. Only the
 * ids of a reply are printed, never its text.
 */
import type { InboxqConfig } from '../config/types';
import { REPLIES_QUEUE, type ReplyMessage } from '../contract/messages';
import { deleteParkedReply, listParkedReplies, type ParkedReply, readParkedReply } from '../reply/parked';
import type { StorageClients } from '../storage/clients';
import { sendQueueMessage } from '../storage/queues';

export interface ReplayedReply {
  mailbox: string;
  taskId: string;
  replyId: string;
  from: 'poison queue' | 'kept poisoned reply';
  /** The queue it was (or would be) put back on. */
  to: string;
}

export interface ReplayResult {
  replayed: ReplayedReply[];
  dryRun: boolean;
}

/** Messages taken off the poison queue per request (the service's most). */
const BATCH = 32;

function idsOf(text: string): Pick<ReplyMessage, 'mailbox' | 'taskId' | 'replyId'> | undefined {
  for (const candidate of [text, Buffer.from(text, 'base64').toString('utf8')]) {
    try {
      const v = JSON.parse(candidate) as Partial<ReplyMessage>;
      if (typeof v.taskId === 'string' && typeof v.replyId === 'string' && typeof v.mailbox === 'string')
        return { mailbox: v.mailbox.toLowerCase(), taskId: v.taskId, replyId: v.replyId };
    } catch {
      // the other encoding
    }
  }
  return undefined;
}

/**
 * Replays the poisoned replies of `mailboxes`. A message on a poison queue for another mailbox, or
 * unreadable, stays where it is.
 */
export async function replayPoisonedReplies(
  storage: StorageClients,
  mailboxes: Pick<InboxqConfig, 'mailbox' | 'repliesQueue'>[],
  options: { dryRun: boolean },
): Promise<ReplayResult> {
  const replayed: ReplayedReply[] = [];
  const served = new Map(mailboxes.map((m) => [m.mailbox, m.repliesQueue]));
  const poisonQueues = [...new Set([...mailboxes.map((m) => m.repliesQueue), REPLIES_QUEUE])].map((q) => `${q}-poison`);
  for (const poison of poisonQueues) {
    const queue = await storage.queue(poison);
    if (options.dryRun) {
      // Peeking shows the first 32 only.
      for (const m of (await queue.peekMessages({ numberOfMessages: BATCH })).peekedMessageItems) {
        const ids = idsOf(m.messageText);
        const to = ids && served.get(ids.mailbox);
        if (ids && to) replayed.push({ ...ids, from: 'poison queue', to });
      }
      continue;
    }
    // Each message is invisible while being looked at; those of other mailboxes are made visible
    // again at the end, so the loop meets each message once.
    const others: { messageId: string; popReceipt: string }[] = [];
    try {
      for (;;) {
        const { receivedMessageItems: items } = await queue.receiveMessages({
          numberOfMessages: BATCH,
          visibilityTimeout: 120,
        });
        if (items.length === 0) break;
        for (const m of items) {
          const ids = idsOf(m.messageText);
          const to = ids && served.get(ids.mailbox);
          if (!ids || !to) {
            others.push(m);
            continue;
          }
          await (await storage.queue(to)).sendMessage(m.messageText);
          await queue.deleteMessage(m.messageId, m.popReceipt);
          replayed.push({ ...ids, from: 'poison queue', to });
        }
      }
    } finally {
      for (const m of others) await queue.updateMessage(m.messageId, m.popReceipt, undefined, 0).catch(() => undefined);
    }
  }
  for (const { mailbox, repliesQueue } of mailboxes) {
    for (const parked of await listParkedReplies(storage, mailbox)) {
      if (!options.dryRun) await replayParked(storage, parked, repliesQueue);
      replayed.push({
        mailbox,
        taskId: parked.taskId,
        replyId: parked.replyId,
        from: 'kept poisoned reply',
        to: repliesQueue,
      });
    }
  }
  return { replayed, dryRun: options.dryRun };
}

async function replayParked(storage: StorageClients, parked: ParkedReply, queue: string): Promise<void> {
  const message = await readParkedReply(storage, parked);
  await sendQueueMessage(storage, queue, message, { mailbox: parked.mailbox });
  await deleteParkedReply(storage, parked);
}

export function formatReplay(result: ReplayResult): string {
  const verb = result.dryRun ? 'would be replayed' : 'replayed';
  if (result.replayed.length === 0) return 'No poisoned replies to replay.\n';
  const lines = result.replayed.map(
    (r) => `  ${r.mailbox}  task ${r.taskId}  reply ${r.replyId}  (${r.from}, to ${r.to})`,
  );
  return `${result.replayed.length} poisoned repl${result.replayed.length === 1 ? 'y' : 'ies'} ${verb}:\n${lines.join('\n')}\n`;
}
