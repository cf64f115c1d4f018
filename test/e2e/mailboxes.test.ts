/**
 * Several mailboxes in one deployment, each with its own credential, sender policy, folders and
 * tasks queue, drained in one tick of the schedule: a broken one (its login refused, left to the
 * drain function) and a slow one (throttled) while the others are drained and answered.
 */
import { simpleParser } from 'mailparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { ImapFaultProxy } from '../../localstack/proxies';
import { runtimeFor } from '../../localstack/runtime';
import {
  decodeQueueMessage,
  encodeQueueMessage,
  REPLIES_QUEUE,
  type TaskMessage,
  TASKS_QUEUE,
} from '../../shared/contract/messages';
import { type ImapError } from '../../shared/errors';
import type { DrainOutcome, TickOutcome } from '../../shared/host/handlers';
import { TaskWorker } from '../../shared/worker/worker';
import { hostStartSettings, runQueueFunction, runTimerFunction } from '../helpers/app';
import { buildMail } from '../helpers/mail';
import { queue, sendReplies } from '../helpers/stack';

let stack: LocalStack;
let slowProxy: ImapFaultProxy;
// The app registers a reply function per mailbox from INBOXQ_MAILBOXES when it loads.
hostStartSettings((s) => ({
  ...s.settings(''),
  INBOXQ_MAILBOX: undefined,
  INBOXQ_MAILBOXES: 'sales,support,broken,slow',
}));
beforeAll(async () => {
  stack = await LocalStack.start();
  slowProxy = new ImapFaultProxy(stack.dovecot.imapPort, stack.certs);
  await slowProxy.start();
});
afterAll(async () => {
  await slowProxy?.stop();
  await stack?.stop();
});

describe('several mailboxes in one deployment', () => {
  it('are drained in one tick, each by its own policy and credential, while one is refused and one is slow', async () => {
    const support = stack.registerApp();
    const broken = stack.registerApp();
    stack.idp.imapRefusedApps.add(broken.clientId);
    const env = stack.settings('', {
      INBOXQ_MAILBOX: undefined,
      INBOXQ_MAILBOXES: 'sales,support,broken,slow',
      // sales: the shared app and settings.
      INBOXQ_SALES__MAILBOX: 'sales@company.test',
      INBOXQ_SALES__AUTHORIZED_SENDERS: '*@partner.test',
      // support: an app of its own, another policy, another folder for processed mail.
      INBOXQ_SUPPORT__MAILBOX: 'support@company.test',
      INBOXQ_SUPPORT__CLIENT_ID: support.clientId,
      INBOXQ_SUPPORT__CLIENT_SECRET_NAME: support.secretName,
      INBOXQ_SUPPORT__AUTHORIZED_SENDERS: 'carol@customer.test',
      INBOXQ_SUPPORT__PROCESSED_FOLDER: 'Done',
      // broken: an app Exchange refuses for IMAP (no FullAccess on the mailbox).
      INBOXQ_BROKEN__MAILBOX: 'broken@company.test',
      INBOXQ_BROKEN__CLIENT_ID: broken.clientId,
      INBOXQ_BROKEN__CLIENT_SECRET_NAME: broken.secretName,
      INBOXQ_BROKEN__AUTHORIZED_SENDERS: '*@partner.test',
      // slow: its server throttles the listing (which brings the sources of small mails) for 3 s.
      INBOXQ_SLOW__MAILBOX: 'slow@company.test',
      INBOXQ_SLOW__IMAP_PORT: String(slowProxy.port),
      INBOXQ_SLOW__AUTHORIZED_SENDERS: '*@partner.test',
      INBOXQ_SLOW__ACKNOWLEDGE: 'false',
    });
    slowProxy.throttle(/FETCH 1:\*/i, 3000);

    await stack.appendMail(
      'sales@company.test',
      buildMail({
        from: 'alice@partner.test',
        to: 'sales@company.test',
        subject: 'Offer for 40 seats',
        messageId: '<offer@partner.test>',
      }),
    );
    await stack.appendMail(
      'sales@company.test',
      buildMail({ from: 'carol@customer.test', to: 'sales@company.test', subject: 'Discount?' }),
    );
    await stack.appendMail(
      'support@company.test',
      buildMail({
        from: 'carol@customer.test',
        to: 'support@company.test',
        subject: 'Printer offline',
        messageId: '<printer@customer.test>',
      }),
    );
    await stack.appendMail(
      'support@company.test',
      buildMail({ from: 'alice@partner.test', to: 'support@company.test', subject: 'Help' }),
    );
    await stack.appendMail(
      'broken@company.test',
      buildMail({ from: 'alice@partner.test', to: 'broken@company.test', subject: 'Lost?' }),
    );
    await stack.appendMail(
      'slow@company.test',
      buildMail({ from: 'alice@partner.test', to: 'slow@company.test', subject: 'Later' }),
    );

    // One tick: every mailbox looked at at once, in the timer's one invocation. Mail is drained
    // there; the refused one is left to the drain function, which says why.
    const logs: string[] = [];
    const started = Date.now();
    const ticks = (await runTimerFunction(stack, env, 'drainSchedule', logs)) as TickOutcome[];
    expect(ticks.map((t) => [t.key, t.mailbox, t.action])).toEqual([
      ['sales', 'sales@company.test', 'drained'],
      ['support', 'support@company.test', 'drained'],
      ['broken', 'broken@company.test', 'requested'],
      ['slow', 'slow@company.test', 'drained'],
    ]);
    const byKey = Object.fromEntries(ticks.map((t) => [t.key, t]));
    // When each drain finished, from its own summary.
    const finished: Record<string, number> = Object.fromEntries(
      ticks
        .filter((t) => t.summary)
        .map((t) => [t.key, Date.parse(t.summary!.startedAt) + t.summary!.durationMs - started]),
    );

    // Each drained by its own policy.
    expect(byKey['sales']!.summary!.counts).toMatchObject({ seen: 2, queued: 1, rejected: 1 });
    expect(byKey['support']!.summary!.counts).toMatchObject({ seen: 2, queued: 1, rejected: 1 });
    expect(byKey['slow']!.summary!.counts).toMatchObject({ seen: 1, queued: 1 });
    expect(slowProxy.injected).toEqual(['throttle FETCH 1:* (UID']);
    // The slow one held up nobody: the others were done before its server let it go on.
    expect(finished['sales']).toBeLessThan(finished['slow']!);
    expect(finished['support']).toBeLessThan(finished['slow']!);
    expect(finished['slow']).toBeGreaterThanOrEqual(3000);

    // The broken one: the tick could not look at it, said so once, and asked the drain function,
    // whose run failed alone, saying which mailbox and what to do, and kept its mail.
    expect(byKey['broken']!.request).toMatchObject({ key: 'broken', mailbox: 'broken@company.test' });
    expect(logs.filter((l) => l.includes("can't look at the mailbox"))).toHaveLength(1);
    const drained = await runQueueFunction(stack, env, 'drain', logs);
    const outcomes = drained.results as DrainOutcome[];
    expect(outcomes.map((o) => o.key)).toEqual(['broken']);
    // The error comes from the app as the host loaded it (compiled), so it is checked by its name and code.
    const error = outcomes[0]!.error as ImapError;
    expect(error).toMatchObject({ name: 'ImapError', code: 'IMAP', failure: 'auth' });
    expect(error.message).toContain('broken@company.test');
    expect(error.message).toContain('What to do:');
    expect(await stack.readFolder('broken@company.test', 'INBOX')).toHaveLength(1);
    const state = await runtimeFor(env, 'broken').ledger.getMailboxState('broken@company.test');
    expect(state).toMatchObject({ lastRunOutcome: 'failed' });
    expect(drained.logs.join('\n')).toMatch(/error: drain: Drain run failed: ImapError: .*broken@company\.test/);

    // Folders of each mailbox's own.
    expect(await stack.readFolder('sales@company.test', 'inboxq-processed')).toHaveLength(2);
    expect(await stack.readFolder('support@company.test', 'Done')).toHaveLength(2);

    // Tasks on each mailbox's own queue; nothing on the one-mailbox queue.
    const take = async (name: string): Promise<TaskMessage[]> => {
      const { receivedMessageItems } = await queue(stack, name).receiveMessages({ numberOfMessages: 32 });
      return receivedMessageItems.map((m) => decodeQueueMessage(m.messageText) as TaskMessage);
    };
    expect((await take('tasks-sales')).map((t) => [t.mailbox, t.from.address, t.subject])).toEqual([
      ['sales@company.test', 'alice@partner.test', 'Offer for 40 seats'],
    ]);
    expect((await take('tasks-support')).map((t) => [t.mailbox, t.from.address, t.subject])).toEqual([
      ['support@company.test', 'carol@customer.test', 'Printer offline'],
    ]);
    expect(
      await queue(stack, TASKS_QUEUE)
        .exists()
        .then(async (e) => (e ? (await queue(stack, TASKS_QUEUE).peekMessages()).peekedMessageItems.length : 0)),
    ).toBe(0);

    // The worker of each mailbox answers on its mailbox's own replies queue; each answer leaves from its own mailbox.
    const salesTask = (await runtimeFor(env, 'sales').ledger.listMessages('sales@company.test')).find(
      (r) => r.state === 'queued',
    )!;
    const supportTask = (await runtimeFor(env, 'support').ledger.listMessages('support@company.test')).find(
      (r) => r.state === 'queued',
    )!;
    await TaskWorker.fromConnectionString(stack.azurite.connectionString, { mailboxKey: 'sales' }).reply({
      taskId: salesTask.taskId,
      mailbox: 'sales@company.test',
      text: '40 seats: 4,000 EUR.',
    });
    await TaskWorker.fromConnectionString(stack.azurite.connectionString, { mailboxKey: 'support' }).reply({
      taskId: supportTask.taskId,
      mailbox: 'support@company.test',
      markdown: 'Please **restart** the printer.',
    });
    for (const key of ['sales', 'support'])
      expect((await queue(stack, `replies-${key}`).getProperties()).approximateMessagesCount, key).toBe(2);
    const sent = await sendReplies(stack, env);
    // Two acknowledgements (sales, support) and two answers, each from its mailbox's queue.
    expect(sent).toMatchObject({ succeeded: 4, failed: 0 });
    const alice = await Promise.all(
      (await stack.readFolder('alice@partner.test', 'INBOX')).map((m) => simpleParser(m.source)),
    );
    const carol = await Promise.all(
      (await stack.readFolder('carol@customer.test', 'INBOX')).map((m) => simpleParser(m.source)),
    );
    expect(alice.map((m) => [m.from?.value[0]?.address, m.inReplyTo]).sort()).toEqual([
      ['sales@company.test', '<offer@partner.test>'],
      ['sales@company.test', '<offer@partner.test>'],
    ]);
    expect(carol.map((m) => [m.from?.value[0]?.address, m.inReplyTo]).sort()).toEqual([
      ['support@company.test', '<printer@customer.test>'],
      ['support@company.test', '<printer@customer.test>'],
    ]);
    expect(alice.find((m) => m.text?.includes('4,000 EUR'))).toBeDefined();
    expect(carol.find((m) => (m.html || '').includes('<strong>restart</strong>'))).toBeDefined();
    // The support mailbox signed in with its own app, for IMAP and for SMTP.
    expect(
      stack.idp.requests.filter((r) => r.clientId === support.clientId && r.outcome === 'issued').length,
    ).toBeGreaterThanOrEqual(1);
  });

  it('a reply on the shared queue that names a mailbox the deployment does not serve is refused, naming the mailboxes it does', async () => {
    const env = stack.settings('', {
      INBOXQ_MAILBOX: undefined,
      INBOXQ_MAILBOXES: 'a,b',
      INBOXQ_A__MAILBOX: 'a@company.test',
      INBOXQ_B__MAILBOX: 'b@company.test',
    });
    await queue(stack, REPLIES_QUEUE).sendMessage(
      encodeQueueMessage({
        type: 'inboxq.reply',
        version: 1,
        taskId: 'f'.repeat(32),
        mailbox: 'c@company.test',
        text: 'x',
      }),
    );
    const run = await runQueueFunction(stack, env, 'reply');
    expect(run).toMatchObject({ succeeded: 1, poisoned: 0 });
    expect(run.logs.join('\n')).toContain('mailbox: c@company.test is not one of a@company.test, b@company.test');
    const [poisoned] = (await queue(stack, `${REPLIES_QUEUE}-poison`).peekMessages()).peekedMessageItems;
    expect((decodeQueueMessage(poisoned!.messageText) as { refused: string }).refused).toContain(
      'The reply names a mailbox this deployment does not serve',
    );
  });
});
