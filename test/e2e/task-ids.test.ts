/**
 * Task ids nobody else can compute: derived under a key created at the deployment's first drain and
 * kept where workers have no role (inboxqKeys), stable for a redelivered mail and across instances;
 * and a deployment that drained mail before the key keeps the task ids of its rows of then.
 */
import { createHash } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { drainMailbox } from '../../shared/drain/drain';
import { deploymentFor } from '../../shared/host/runtime';
import { deriveTaskId } from '../../shared/identity/ids';
import { KEYS_TABLE } from '../../shared/identity/task-key';
import { partitionKey } from '../../shared/ledger/rows';
import { memoryLogger } from '../../shared/telemetry/log';
import { buildMail } from '../helpers/mail';
import { clearTasks, interruptAt, Interrupted, peekTasksOf, table } from '../helpers/stack';

let stack: LocalStack;
beforeAll(async () => {
  stack = await LocalStack.start();
});
afterAll(async () => {
  await stack?.stop();
});

const settings = (mailbox: string, extra: Record<string, string> = {}) =>
  stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test', INBOXQ_ACKNOWLEDGE: 'false', ...extra });

/**
 * The mailbox as a new instance sees it: its own Storage clients, so the key is read again (each
 * distinct set of settings gets a runtime of its own; the schedule is a setting nothing else reads).
 */
let instances = 0;
function freshInstance(mailbox: string) {
  return deploymentFor(settings(mailbox, { INBOXQ_DRAIN_SCHEDULE: `*/${++instances} * * * * *` })).mailboxes[0]!;
}

function tasksOf(mailbox: string) {
  return peekTasksOf(stack, mailbox);
}

describe('task ids', () => {
  it('are keyed: not the sha256 anyone can compute from the Message-ID, the same on every instance and for a redelivered mail', async () => {
    const mailbox = 'keyed@company.test';
    const messageId = '<keyed-1@partner.test>';
    await stack.appendMail(mailbox, buildMail({ from: 'bob@partner.test', to: mailbox, messageId }));
    await expect(
      drainMailbox({ ...freshInstance(mailbox), log: memoryLogger(), onStep: interruptAt('queued') }),
    ).rejects.toThrow(Interrupted);
    const [first] = await tasksOf(mailbox);
    // What a worker (or anyone who saw the Message-ID) could compute without the key.
    const unkeyed = createHash('sha256').update(`inboxq-task\0${mailbox}\0mid:${messageId}`).digest('hex').slice(0, 32);
    expect(first!.taskId).not.toBe(unkeyed);
    expect(first!.taskId).not.toBe(deriveTaskId(null, mailbox, `mid:${messageId}`));
    // The key is in the app's table, created once.
    const keys = [];
    for await (const e of table(stack, KEYS_TABLE).listEntities()) keys.push(e);
    expect(keys).toHaveLength(1);
    // Another instance resumes the interrupted run: the same task id, queued again, nothing new.
    const summary = await drainMailbox({ ...freshInstance(mailbox), log: memoryLogger() });
    expect(summary.counts).toMatchObject({ queued: 1, resumed: 1 });
    const ids = new Set((await tasksOf(mailbox)).map((t) => t.taskId));
    expect([...ids]).toEqual([first!.taskId]);
  });

  it('of rows from before the key are kept: a mail claimed then, and a copy of one processed then, get no second task', async () => {
    const mailbox = 'upgraded@company.test';
    await clearTasks(stack);
    const resumedId = '<before-key-1@partner.test>';
    const copiedId = '<before-key-2@partner.test>';
    // Mail 1 was queued and recorded by a drain that died before removing it; mail 2 was processed.
    await stack.appendMail(mailbox, buildMail({ from: 'bob@partner.test', to: mailbox, messageId: copiedId }));
    await drainMailbox({ ...freshInstance(mailbox), log: memoryLogger() });
    await stack.appendMail(mailbox, buildMail({ from: 'bob@partner.test', to: mailbox, messageId: resumedId }));
    await expect(
      drainMailbox({ ...freshInstance(mailbox), log: memoryLogger(), onStep: interruptAt('recorded') }),
    ).rejects.toThrow(Interrupted);
    // History as a deployment from before the key wrote it: every row under the unkeyed task id, no key.
    const messages = table(stack, 'inboxqMessages');
    const pk = partitionKey(mailbox);
    for await (const row of messages.listEntities({ queryOptions: { filter: `PartitionKey eq '${pk}'` } })) {
      const identity = String(row['identity']);
      const { partitionKey: p, rowKey, etag: _etag, timestamp: _ts, ...fields } = row;
      await messages.deleteEntity(p!, rowKey!);
      await messages.createEntity({ ...fields, partitionKey: p!, rowKey: deriveTaskId(null, mailbox, identity) });
    }
    for await (const e of table(stack, KEYS_TABLE).listEntities())
      await table(stack, KEYS_TABLE).deleteEntity(e.partitionKey!, e.rowKey!);
    await clearTasks(stack);
    // A copy of mail 2 arrives after the upgrade.
    await stack.appendMail(mailbox, buildMail({ from: 'bob@partner.test', to: mailbox, messageId: copiedId }));

    // The upgraded app's first drain creates the key, and finds both under the ids of before.
    const rt = freshInstance(mailbox);
    const summary = await drainMailbox({ ...rt, log: memoryLogger() });
    expect(summary.counts).toMatchObject({ resumed: 2 });
    expect(await tasksOf(mailbox)).toEqual([]);
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
    const rows = await rt.ledger.listMessages(mailbox);
    expect(rows.map((r) => r.taskId).sort()).toEqual(
      [deriveTaskId(null, mailbox, `mid:${resumedId}`), deriveTaskId(null, mailbox, `mid:${copiedId}`)].sort(),
    );
    expect(rows.every((r) => r.state === 'queued' && r.removed)).toBe(true);
    // The key says rows were there before it: the one thing that makes the drain look.
    const keys = [];
    for await (const e of table(stack, KEYS_TABLE).listEntities()) keys.push(e);
    expect(keys.map((k) => k['rowsBefore'])).toEqual([true]);
  });
});
