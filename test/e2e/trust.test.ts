/**
 * Mailboxes are trust domains: a deployment of two mailboxes, sales and support, each with a worker
 * of its own on its own queues and container, and every attack the sales worker can try on support
 * through what inboxq reads (its replies queue, the blobs a reply names, inboxq's own reply ids).
 * What Azure RBAC keeps from the sales worker (support's queues and container themselves) is
 * checked on the evaluated template (scripts/deploy-check.ts, check 11): Azurite checks account keys
 * only.
 */
import { simpleParser } from 'mailparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import {
  decodeQueueMessage,
  encodeQueueMessage,
  type ReplyMessageInput,
  type TaskMessage,
} from '../../shared/contract/messages';
import { partitionKey } from '../../shared/ledger/rows';
import { readParkedReply } from '../../shared/reply/parked';
import { TaskWorker } from '../../shared/worker/worker';
import { hostStartSettings, registeredFunctions } from '../helpers/app';
import { buildMail } from '../helpers/mail';
import { drainTick, handlePoisonedReplies, queue, sendReplies } from '../helpers/stack';

const SALES = 'sales@company.test';
const SUPPORT = 'support@company.test';

let stack: LocalStack;
let env: Record<string, string | undefined>;
const deployment = (s: LocalStack) =>
  s.settings('', {
    INBOXQ_MAILBOX: undefined,
    INBOXQ_MAILBOXES: 'sales,support',
    INBOXQ_SALES__MAILBOX: SALES,
    INBOXQ_SUPPORT__MAILBOX: SUPPORT,
    INBOXQ_AUTHORIZED_SENDERS: '*@partner.test',
    INBOXQ_ACKNOWLEDGE: 'false',
  });
hostStartSettings(deployment);

let salesWorker: TaskWorker;
let salesTask: TaskMessage;
let supportTask: TaskMessage;

beforeAll(async () => {
  stack = await LocalStack.start();
  env = deployment(stack);
  salesWorker = TaskWorker.fromConnectionString(stack.azurite.connectionString, { mailboxKey: 'sales' });
  const supportWorker = TaskWorker.fromConnectionString(stack.azurite.connectionString, { mailboxKey: 'support' });
  await stack.appendMail(SALES, buildMail({ from: 'alice@partner.test', to: SALES, subject: 'Quote, please' }));
  await stack.appendMail(
    SUPPORT,
    buildMail({
      from: 'bob@partner.test',
      to: SUPPORT,
      subject: 'Contract attached',
      attachments: [{ filename: 'contract.pdf', contentType: 'application/pdf', content: Buffer.from('%PDF secret') }],
    }),
  );
  await drainTick(stack, env);
  salesTask = (await salesWorker.receive())[0]!.task;
  supportTask = (await supportWorker.receive())[0]!.task;
});
afterAll(async () => {
  await stack?.stop();
});

/** Everything the reply functions and the poison functions do with what is on the queues now. */
async function deliver() {
  const logs: string[] = [];
  const sent = await sendReplies(stack, env, logs);
  const refused = await queue(stack, 'replies-sales-poison').peekMessages({ numberOfMessages: 32 });
  const reasons = refused.peekedMessageItems.map(
    (m) => (decodeQueueMessage(m.messageText) as { refused?: string }).refused,
  );
  await handlePoisonedReplies(stack, env, logs);
  return { sent, reasons, logs: logs.join('\n') };
}

const mailTo = (address: string) => stack.smtp.accepted.filter((m) => m.to.includes(address));
const row = (mailbox: string, taskId: string) =>
  runtimeFor(env, mailbox === SALES ? 'sales' : 'support').ledger.getMessage(mailbox, taskId);

/** Puts a message on the sales replies queue as the sales worker can: with its own queue's rights. */
async function asSalesWorker(message: Record<string, unknown>): Promise<void> {
  const q = queue(stack, 'replies-sales');
  await q.createIfNotExists();
  await q.sendMessage(encodeQueueMessage({ type: 'inboxq.reply', version: 1, ...message }));
}

describe('a deployment of two mailboxes', () => {
  it('gives each mailbox its own queues, container and reply functions', async () => {
    expect(salesTask.mailbox).toBe(SALES);
    expect(supportTask.mailbox).toBe(SUPPORT);
    expect(supportTask.attachments[0]!.blob.container).toBe('inboxq-mail-support');
    expect(salesWorker).toMatchObject({
      tasksQueue: 'tasks-sales',
      repliesQueue: 'replies-sales',
      container: 'inboxq-mail-sales',
    });
    expect((await registeredFunctions(stack)).sort()).toEqual([
      'drain',
      'drainSchedule',
      'reply',
      'reply-sales',
      'reply-support',
      'replyPoison',
      'replyPoison-sales',
      'replyPoison-support',
    ]);
  });

  it("a sales worker's reply with its own attachment and the task's own is sent from sales, threaded", async () => {
    const own = await salesWorker.putReplyAttachment(salesTask, 'quote.csv', Buffer.from('seats,price\n40,4000\n'));
    expect(own.blob).toEqual({ container: 'inboxq-mail-sales', name: `replies/${salesTask.taskId}/quote.csv` });
    await salesWorker.reply({
      taskId: salesTask.taskId,
      mailbox: SALES,
      text: 'Here is the quote.',
      attachments: [own],
    });
    const { sent, reasons } = await deliver();
    expect(reasons).toEqual([]);
    expect(sent).toMatchObject({ succeeded: 1, failed: 0 });
    const [answer] = mailTo('alice@partner.test');
    const parsed = await simpleParser(answer!.raw);
    expect(parsed.from?.value[0]?.address).toBe(SALES);
    expect(parsed.attachments.map((a) => [a.filename, a.content.toString()])).toEqual([
      ['quote.csv', 'seats,price\n40,4000\n'],
    ]);
  });
});

describe('the sales worker attacking support', () => {
  it("can't answer a support task on its own queue: refused, naming both mailboxes; nothing sent, support's task untouched", async () => {
    await asSalesWorker({
      taskId: supportTask.taskId,
      mailbox: SUPPORT,
      replyId: 'forged',
      text: 'Your contract is void.',
    });
    const { sent, reasons, logs } = await deliver();
    expect(sent).toMatchObject({ succeeded: 1, failed: 0, poisoned: 0 });
    expect(reasons).toEqual([
      expect.stringContaining(`A reply on replies-sales, the queue of ${SALES}, names another mailbox`),
    ]);
    expect(reasons[0]).toContain(`mailbox: ${SUPPORT} is not ${SALES}`);
    expect(logs).toContain('it is moved to replies-sales-poison and nothing is sent');
    expect(logs).toContain("A poisoned reply can't be tied to a mailbox and is dropped");
    expect(mailTo('bob@partner.test')).toHaveLength(0);
    expect((await row(SUPPORT, supportTask.taskId))?.state).toBe('queued');
    expect(await runtimeFor(env, 'support').ledger.getReply(SUPPORT, supportTask.taskId, 'forged')).toBeUndefined();
  });

  it("can't answer a support task in the name of sales: the task is none of sales'", async () => {
    await asSalesWorker({ taskId: supportTask.taskId, mailbox: SALES, replyId: 'forged-2', text: 'x' });
    const { reasons, logs } = await deliver();
    expect(reasons).toEqual([
      expect.stringContaining(`names task ${supportTask.taskId}, which this mailbox never queued`),
    ]);
    expect(logs).toContain("can't be tied to a task of this mailbox and is dropped");
    expect(stack.smtp.accepted.filter((m) => m.to.includes('bob@partner.test'))).toHaveLength(0);
    expect((await row(SUPPORT, supportTask.taskId))?.state).toBe('queued');
  });

  it("can't put inboxq's own acknowledgements for support on its queue", async () => {
    const q = queue(stack, 'replies-sales');
    await q.sendMessage(
      encodeQueueMessage({
        type: 'inboxq.acknowledgements',
        version: 1,
        mailbox: SUPPORT,
        taskIds: [supportTask.taskId],
      }),
    );
    const { reasons } = await deliver();
    expect(reasons).toEqual([expect.stringContaining('names another mailbox')]);
    expect(mailTo('bob@partner.test')).toHaveLength(0);
  });

  describe("can't attach what is not its reply's to a sales reply", () => {
    const supportPk = () => partitionKey(SUPPORT);
    const cases: [string, () => { container: string; name: string }, string][] = [
      [
        "support's container",
        () => ({ container: 'inboxq-mail-support', name: supportTask.attachments[0]!.blob.name }),
        "container inboxq-mail-support is not this mailbox's (inboxq-mail-sales)",
      ],
      [
        'the shared container of a deployment of one mailbox',
        () => ({ container: 'inboxq-mail', name: `replies/${salesTask.taskId}/x` }),
        "container inboxq-mail is not this mailbox's",
      ],
      [
        "support's prefix in its own container",
        () => ({
          container: 'inboxq-mail-sales',
          name: `${supportPk()}/${supportTask.taskId}/attachments/0001-contract.pdf`,
        }),
        'is not under replies/',
      ],
      [
        'a name that climbs out of its reply prefix with ..',
        () => ({ container: 'inboxq-mail-sales', name: `replies/${salesTask.taskId}/../../${supportPk()}/x` }),
        'is not under replies/',
      ],
      [
        'an encoded separator',
        () => ({ container: 'inboxq-mail-sales', name: `replies/${salesTask.taskId}/..%2F..%2Fmessage.eml` }),
        'is not under replies/',
      ],
      [
        'a backslash separator',
        () => ({ container: 'inboxq-mail-sales', name: `replies/${salesTask.taskId}/..\\..\\message.eml` }),
        'is not under replies/',
      ],
      [
        "another task's reply prefix",
        () => ({ container: 'inboxq-mail-sales', name: `replies/${supportTask.taskId}/contract.pdf` }),
        'is not under replies/',
      ],
    ];
    for (const [what, blob, reason] of cases) {
      it(what, async () => {
        const before = stack.smtp.accepted.length;
        const replyId = `attach-${cases.findIndex((c) => c[0] === what)}`;
        const reply: ReplyMessageInput = {
          type: 'inboxq.reply',
          version: 1,
          taskId: salesTask.taskId,
          mailbox: SALES,
          replyId,
          text: 'See attached.',
          attachments: [{ filename: 'contract.pdf', contentType: 'application/pdf', blob: blob() }],
        };
        await asSalesWorker(reply);
        const { sent, reasons, logs } = await deliver();
        expect(sent).toMatchObject({ succeeded: 1, failed: 0 });
        expect(reasons).toEqual([expect.stringContaining('The reply attaches a blob it may not')]);
        expect(reasons[0]).toContain(reason);
        expect(logs).toContain('A reply was refused; the task is marked failed');
        // Nothing left with a support blob: no answer; at most the failure notice (sent once, at the first refusal).
        const sentNow = stack.smtp.accepted.slice(before);
        const notice = `<inboxq.${salesTask.taskId}.inboxq-failure-notice@company.test>`;
        expect(sentNow.filter((m) => m.messageId !== notice)).toEqual([]);
        expect(sentNow.some((m) => m.raw.toString().includes('%PDF secret'))).toBe(false);
        // Kept with its reason for `inboxq replay`; the task failed (its reasons say the first refusal).
        const parked = await readParkedReply(runtimeFor(env, 'sales').storage, {
          name: `${partitionKey(SALES)}/${salesTask.taskId}.${replyId}.json`,
          mailbox: SALES,
          taskId: salesTask.taskId,
          replyId,
        });
        expect((parked as { refused: string }).refused).toContain(reason);
        const task = await row(SALES, salesTask.taskId);
        expect(task?.state).toBe('failed');
        expect(task?.reasons.join('\n')).toContain('the reply attach-0 could not be delivered: refused');
      });
    }
    it('and the sender of the sales task was told once that an answer could not be delivered', () => {
      const notices = mailTo('alice@partner.test').filter((m) => m.messageId?.includes('inboxq-failure-notice'));
      expect(notices).toHaveLength(1);
      expect(notices[0]!.raw.toString()).not.toContain('%PDF secret');
    });
  });

  it("can't use inboxq's own reply ids: refused, nothing sent, the task not failed, no notice", async () => {
    const salesRow = await row(SALES, salesTask.taskId);
    const before = stack.smtp.accepted.length;
    for (const replyId of ['inboxq-ack', 'inboxq-failure-notice'])
      await asSalesWorker({ taskId: salesTask.taskId, mailbox: SALES, replyId, text: 'Your account is closed.' });
    const { reasons, logs } = await deliver();
    expect(reasons).toEqual([
      expect.stringContaining("The reply uses a reply id of inboxq's own"),
      expect.stringContaining("The reply uses a reply id of inboxq's own"),
    ]);
    expect(logs).toContain("A reply under a reply id of inboxq's own was refused and is dropped");
    expect(stack.smtp.accepted.length).toBe(before);
    expect((await row(SALES, salesTask.taskId))?.reasons).toEqual(salesRow?.reasons);
  });
});
