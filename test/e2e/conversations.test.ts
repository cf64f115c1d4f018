/**
 * Conversations, acknowledgements, quoted history and Markdown replies, end to end on the real
 * local servers: mail goes into Dovecot, through the drain (schedule and queue), to the sample
 * worker's TaskWorker, back through the reply function over SMTP, and is read back over IMAP.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';

import Ajv2020 from 'ajv/dist/2020';
import { type ParsedMail, simpleParser } from 'mailparser';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import { encodeQueueMessage, type TaskMessage } from '../../shared/contract/messages';
import {
  ConversationBatch,
  ConversationStore,
  type MailForConversation,
} from '../../shared/conversation/conversations';
import { conversationIdFor } from '../../shared/identity/ids';
import { taskIdsFor } from '../../shared/identity/task-key';
import { decodeThreadIndex, newThreadIndex, readThreadIndex } from '../../shared/mail/thread-index';
import { TaskWorker } from '../../shared/worker/worker';
import { runQueueFunction } from '../helpers/app';
import { buildMail } from '../helpers/mail';
import {
  clearTasks,
  drainNow,
  queue,
  REPLIES_QUEUE,
  sendReplies as sendRepliesOf,
  table,
  takeAllTasks,
} from '../helpers/stack';

let stack: LocalStack;
let worker: TaskWorker;
beforeAll(async () => {
  stack = await LocalStack.start();
  worker = TaskWorker.fromConnectionString(stack.azurite.connectionString);
});
afterAll(async () => {
  await stack?.stop();
});

type Env = Record<string, string | undefined>;

/** Runs the reply function over everything on the replies queue, as the host would. */
const sendReplies = (env: Env) => sendRepliesOf(stack, env);

/** A sender's inbox, parsed. */
async function inboxOf(address: string): Promise<ParsedMail[]> {
  return Promise.all((await stack.readFolder(address, 'INBOX')).map((m) => simpleParser(m.source)));
}

/** Drains, and returns the one task the drain queued. */
async function drainOne(env: Env): Promise<TaskMessage> {
  await clearTasks(stack);
  const summary = await drainNow(stack, env);
  expect(summary.counts.queued).toBe(1);
  const tasks = await takeAllTasks(stack);
  expect(tasks).toHaveLength(1);
  return tasks[0]!;
}

/** What a worker in another language does: validate against the published JSON Schema files. */
const ajv = new Ajv2020({ allErrors: true, strict: false });
const validTask = ajv.compile(JSON.parse(readFileSync('schemas/task.v1.schema.json', 'utf8')));
const validReply = ajv.compile(JSON.parse(readFileSync('schemas/reply.v1.schema.json', 'utf8')));

describe('conversations', () => {
  it('a thread of three mails is one conversation, and each task carries the ones before it', async () => {
    const mailbox = 'thread@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: 'alice@partner.test' });

    // 1. Alice asks.
    await stack.appendMail(
      mailbox,
      buildMail({
        from: 'Alice <alice@partner.test>',
        to: mailbox,
        subject: 'Travel budget',
        messageId: '<t1@partner.test>',
        body: 'What is left of the travel budget?',
      }),
    );
    const first = await drainOne(env);
    expect(first.conversation).toEqual({
      id: conversationIdFor(first.taskId),
      isNew: true,
      continuedBy: null,
      previousTaskIds: [],
    });
    await worker.reply({ taskId: first.taskId, mailbox, text: 'About 4,000 EUR are left.' });
    await sendReplies(env);
    const answer = (await inboxOf('alice@partner.test')).find(
      (m) => m.messageId === `<inboxq.${first.taskId}.reply@company.test>`,
    )!;
    expect(answer.subject).toBe(`Re: Travel budget [#${first.conversation.id}]`);

    // 2. Alice answers inboxq's reply, quoting it as Outlook does.
    await stack.appendMail(
      mailbox,
      buildMail({
        from: 'Alice <alice@partner.test>',
        to: mailbox,
        subject: answer.subject!,
        messageId: '<t2@partner.test>',
        inReplyTo: answer.messageId!,
        body: 'Thanks. Can you book the Berlin trip from it?\r\n\r\nAlice\r\n\r\nFrom: thread@company.test\r\nSent: Monday, November 23, 2026 10:00\r\nTo: Alice <alice@partner.test>\r\nSubject: Re: Travel budget\r\n\r\nAbout 4,000 EUR are left.\r\n',
      }),
    );
    const second = await drainOne(env);
    expect(second.conversation).toEqual({
      id: first.conversation.id,
      isNew: false,
      continuedBy: 'in-reply-to',
      previousTaskIds: [first.taskId],
    });
    // The new text and the quoted history, apart.
    expect((await worker.newText(second)).trim()).toBe('Thanks. Can you book the Berlin trip from it?\n\nAlice');
    expect(await worker.quotedText(second)).toContain('About 4,000 EUR are left.');
    expect(await worker.quotedText(second)).toMatch(/^From: thread@company.test/);

    // 3. Alice corrects herself, answering her own mail (not inboxq's).
    await stack.appendMail(
      mailbox,
      buildMail({
        from: 'Alice <alice@partner.test>',
        to: mailbox,
        subject: `Re: ${answer.subject!}`,
        messageId: '<t3@partner.test>',
        extraHeaders: ['In-Reply-To: <t2@partner.test>', `References: ${answer.messageId} <t2@partner.test>`],
        body: 'Sorry, Munich, not Berlin.\r\n\r\nOn Mon, Nov 23, 2026 at 10:05 Alice <alice@partner.test> wrote:\r\n> Thanks. Can you book the Berlin trip from it?\r\n',
      }),
    );
    const third = await drainOne(env);
    for (const task of [first, second, third]) expect(validTask(task), JSON.stringify(validTask.errors)).toBe(true);
    expect(third.conversation).toEqual({
      id: first.conversation.id,
      isNew: false,
      continuedBy: 'in-reply-to',
      previousTaskIds: [first.taskId, second.taskId],
    });
    expect(third.body.newText!.trim()).toBe('Sorry, Munich, not Berlin.');
    expect(third.body.quotedText).toContain('> Thanks. Can you book the Berlin trip from it?');

    // The conversation in Table Storage: its participant and its three tasks in order.
    const row = await table(stack, 'inboxqConversations').getEntity<{ participants: string; taskIds: string }>(
      encodeURIComponent(mailbox),
      `c.${first.conversation.id}`,
    );
    expect(JSON.parse(row.participants)).toEqual(['alice@partner.test']);
    expect(JSON.parse(row.taskIds)).toEqual([first.taskId, second.taskId, third.taskId]);
    // Only the first mail was acknowledged.
    const acks = (await inboxOf('alice@partner.test')).filter((m) => /inboxq-ack@/.test(m.messageId ?? ''));
    expect(acks.map((m) => m.inReplyTo)).toEqual(['<t1@partner.test>']);
  });

  it('a new mail with only the subject tag continues the conversation of its sender', async () => {
    const mailbox = 'tagged@company.test';
    const env = stack.settings(mailbox, {
      INBOXQ_AUTHORIZED_SENDERS: 'alice@partner.test',
      INBOXQ_ACKNOWLEDGE: 'false',
    });
    await stack.appendMail(mailbox, buildMail({ from: 'alice@partner.test', to: mailbox, subject: 'Invoice 17' }));
    const first = await drainOne(env);
    // Written from scratch (no In-Reply-To, no References), the tag pasted into the subject.
    await stack.appendMail(
      mailbox,
      buildMail({ from: 'alice@partner.test', to: mailbox, subject: `One more thing [#${first.conversation.id}]` }),
    );
    const second = await drainOne(env);
    expect(second.conversation).toEqual({
      id: first.conversation.id,
      isNew: false,
      continuedBy: 'subject-tag',
      previousTaskIds: [first.taskId],
    });
  });

  it('another authorized sender who copies the tag or answers the thread starts a conversation of their own', async () => {
    const mailbox = 'foreign@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test', INBOXQ_ACKNOWLEDGE: 'false' });
    await stack.appendMail(
      mailbox,
      buildMail({
        from: 'alice@partner.test',
        to: mailbox,
        subject: 'Salary review',
        messageId: '<alice-1@partner.test>',
      }),
    );
    const alice = await drainOne(env);

    // Bob (authorized, DMARC pass) pastes Alice's tag into his subject.
    await stack.appendMail(
      mailbox,
      buildMail({ from: 'bob@partner.test', to: mailbox, subject: `Re: Salary review [#${alice.conversation.id}]` }),
    );
    const copied = await drainOne(env);
    expect(copied.conversation.id).not.toBe(alice.conversation.id);
    expect(copied.conversation).toMatchObject({
      id: conversationIdFor(copied.taskId),
      isNew: true,
      continuedBy: null,
      previousTaskIds: [],
    });

    // Bob answers Alice's mail itself, In-Reply-To and all.
    await stack.appendMail(
      mailbox,
      buildMail({
        from: 'bob@partner.test',
        to: mailbox,
        subject: 'Re: Salary review',
        inReplyTo: '<alice-1@partner.test>',
      }),
    );
    const answered = await drainOne(env);
    expect(answered.conversation).toMatchObject({ isNew: true, previousTaskIds: [] });
    expect(answered.conversation.id).not.toBe(alice.conversation.id);

    // Bob's own tag still works for Bob, even after Alice's in the same subject.
    await stack.appendMail(
      mailbox,
      buildMail({
        from: 'bob@partner.test',
        to: mailbox,
        subject: `Salary [#${alice.conversation.id}] [#${copied.conversation.id}]`,
      }),
    );
    const own = await drainOne(env);
    expect(own.conversation).toEqual({
      id: copied.conversation.id,
      isNew: false,
      continuedBy: 'subject-tag',
      previousTaskIds: [copied.taskId],
    });

    // The ledger says why, and Alice's conversation is untouched.
    const row = await table(stack, 'inboxqMessages').getEntity<{ reasons: string }>(
      encodeURIComponent(mailbox),
      answered.taskId,
    );
    expect(JSON.parse(row.reasons).join(' ')).toContain(
      `it points at conversation ${alice.conversation.id} of other participants`,
    );
    const conversation = await table(stack, 'inboxqConversations').getEntity<{ taskIds: string }>(
      encodeURIComponent(mailbox),
      `c.${alice.conversation.id}`,
    );
    expect(JSON.parse(conversation.taskIds)).toEqual([alice.taskId]);
  });
});

describe('a batch of follow-ups', () => {
  it('reads the rows its decisions need together, then decides each mail as before, in order', async () => {
    const mailbox = 'followups@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test', INBOXQ_ACKNOWLEDGE: 'false' });
    const senderOf = (i: number) => `s${i % 4}@partner.test`;
    // Twelve first mails, from four senders: twelve conversations.
    for (let i = 0; i < 12; i++)
      await stack.appendMail(
        mailbox,
        buildMail({ from: senderOf(i), to: mailbox, subject: `Question ${i}`, messageId: `<first-${i}@partner.test>` }),
      );
    await clearTasks(stack);
    expect((await drainNow(stack, env)).counts.queued).toBe(12);
    const firsts = new Map((await takeAllTasks(stack)).map((t) => [t.messageId, t]));
    expect(firsts.size).toBe(12);

    // Their follow-ups: each answers its first mail; one more from another sender answers the first
    // thread (not a participant: refused); one more carries only the subject tag of the second.
    const followUps = Array.from({ length: 12 }, (_, i) =>
      buildMail({
        from: senderOf(i),
        to: mailbox,
        subject: `Re: Question ${i}`,
        inReplyTo: `<first-${i}@partner.test>`,
      }),
    );
    const second = firsts.get('<first-1@partner.test>')!;
    followUps.push(
      buildMail({
        from: 'stranger@partner.test',
        to: mailbox,
        subject: 'Re: Question 0',
        inReplyTo: '<first-0@partner.test>',
      }),
      buildMail({ from: senderOf(1), to: mailbox, subject: `Also [#${second.conversation.id}]` }),
    );

    // 1. The decisions of that batch, against the mailbox's rows in Storage, every read counted.
    const rt = runtimeFor(env);
    const taskIds = await taskIdsFor(rt);
    let reads = 0;
    let inFlight = 0;
    let peak = 0;
    const counted = async <T>(read: () => Promise<T>): Promise<T> => {
      reads++;
      peak = Math.max(peak, ++inFlight);
      try {
        return await read();
      } finally {
        inFlight--;
      }
    };
    class CountedStore extends ConversationStore {
      override get(id: string) {
        return counted(() => super.get(id));
      }
    }
    const batch = new ConversationBatch(
      new CountedStore(rt.storage, mailbox),
      (taskId) => counted(async () => (await rt.ledger.getMessage(mailbox, taskId))?.conversationId ?? null),
      (messageId) => taskIds.ofMessageId(messageId),
    );
    const questions: MailForConversation[] = followUps.map((source, n) => {
      const from = /^From: (.*)$/m.exec(source)![1]!;
      const subject = /^Subject: (.*)$/m.exec(source)![1]!;
      const inReplyTo = /^In-Reply-To: (.*)$/m.exec(source)?.[1] ?? null;
      return {
        taskId: `followup-${n}`,
        sender: from,
        subject,
        messageId: `<followup-${n}@partner.test>`,
        inReplyTo,
        references: inReplyTo ? [inReplyTo] : [],
        receivedAt: new Date().toISOString(),
        firstAttempt: true,
      };
    });
    await batch.prefetch(questions);
    // The 12 first mails' task rows (the stranger's follow-up names the first one again), then the
    // 12 conversations they name (the tagged mail's tag is one of them): 24 reads, several at a time.
    expect(reads).toBe(24);
    expect(peak).toBeGreaterThan(1);
    expect(peak).toBeLessThanOrEqual(16);
    const decisions = [];
    for (const q of questions) decisions.push(await batch.decide(q));
    // Everything the decisions needed was in hand.
    expect(reads).toBe(24);
    for (let i = 0; i < 12; i++) {
      const first = firsts.get(`<first-${i}@partner.test>`)!;
      expect(decisions[i]).toMatchObject({
        isNew: false,
        continuedBy: 'in-reply-to',
        previousTaskIds: [first.taskId],
        refusedConversationId: null,
      });
      expect(decisions[i]!.conversation.id).toBe(first.conversation.id);
    }
    const first0 = firsts.get('<first-0@partner.test>')!;
    expect(decisions[12]).toMatchObject({
      isNew: true,
      continuedBy: null,
      refusedConversationId: first0.conversation.id,
    });
    expect(decisions[13]!.conversation.id).toBe(second.conversation.id);
    expect(decisions[13]).toMatchObject({ isNew: false, continuedBy: 'subject-tag' });
    // (Not committed: the drain below decides the same batch for real.)

    // 2. The same mails through the drain: the same decisions.
    for (const source of followUps) await stack.appendMail(mailbox, source);
    await clearTasks(stack);
    expect((await drainNow(stack, env)).counts.queued).toBe(14);
    const tasks = await takeAllTasks(stack);
    const byReply = new Map(tasks.map((t) => [t.inReplyTo ?? t.subject, t]));
    for (let i = 0; i < 12; i++) {
      const first = firsts.get(`<first-${i}@partner.test>`)!;
      const task = tasks.find((t) => t.inReplyTo === `<first-${i}@partner.test>` && t.from.address === senderOf(i))!;
      expect(task.conversation).toMatchObject({ id: first.conversation.id, isNew: false, continuedBy: 'in-reply-to' });
    }
    const stranger = tasks.find((t) => t.from.address === 'stranger@partner.test')!;
    expect(stranger.conversation).toMatchObject({ isNew: true, continuedBy: null });
    expect(stranger.conversation.id).not.toBe(first0.conversation.id);
    const tagged = byReply.get(`Also [#${second.conversation.id}]`)!;
    expect(tagged.conversation).toMatchObject({ id: second.conversation.id, isNew: false, continuedBy: 'subject-tag' });
  });
});

describe('acknowledgements', () => {
  it('the first mail of a conversation gets a threaded acknowledgement with its task id, sent once', async () => {
    const mailbox = 'ack@company.test';
    const sender = 'dora@partner.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: sender });
    await stack.appendMail(
      mailbox,
      buildMail({ from: `Dora <${sender}>`, to: mailbox, subject: 'New laptop', messageId: '<laptop@partner.test>' }),
    );
    const task = await drainOne(env);
    const run = await sendReplies(env);
    expect(run).toMatchObject({ succeeded: 1, failed: 0 });

    const [ack, ...others] = await inboxOf(sender);
    expect(others).toHaveLength(0);
    expect(ack!.subject).toBe(`Re: New laptop [#${task.conversation.id}]`);
    expect(ack!.inReplyTo).toBe('<laptop@partner.test>');
    expect(ack!.references).toBe('<laptop@partner.test>');
    expect(ack!.from?.value[0]?.address).toBe(mailbox);
    expect(ack!.text).toContain(
      `your message "New laptop" was received and is being worked on as task ${task.taskId}.`,
    );
    expect(ack!.headers.get('auto-submitted')).toBe('auto-replied');

    // A drain that found the mail queued but not yet removed queues the acknowledgement again: still one mail.
    await queue(stack, REPLIES_QUEUE).sendMessage(
      encodeQueueMessage({ type: 'inboxq.acknowledgements', version: 1, mailbox, taskIds: [task.taskId] }),
    );
    await sendReplies(env);
    expect(await inboxOf(sender)).toHaveLength(1);
  });

  it('takes its text from the setting, and is not sent when switched off', async () => {
    const custom = stack.settings('ack-text@company.test', {
      INBOXQ_AUTHORIZED_SENDERS: 'erin@partner.test',
      INBOXQ_ACKNOWLEDGEMENT_TEXT: 'Ticket {taskId} ({conversationId}) opened for "{subject}" at {mailbox}.\\nRegards',
    });
    await stack.appendMail(
      'ack-text@company.test',
      buildMail({ from: 'erin@partner.test', to: 'ack-text@company.test', subject: 'VPN' }),
    );
    const task = await drainOne(custom);
    await sendReplies(custom);
    const [ack] = await inboxOf('erin@partner.test');
    expect(ack!.text!.trim()).toBe(
      `Ticket ${task.taskId} (${task.conversation.id}) opened for "VPN" at ack-text@company.test.\nRegards`,
    );

    const off = stack.settings('ack-off@company.test', {
      INBOXQ_AUTHORIZED_SENDERS: 'fred@partner.test',
      INBOXQ_ACKNOWLEDGE: 'false',
    });
    await stack.appendMail(
      'ack-off@company.test',
      buildMail({ from: 'fred@partner.test', to: 'ack-off@company.test' }),
    );
    await drainOne(off);
    expect((await sendReplies(off)).succeeded).toBe(0);
    expect(await inboxOf('fred@partner.test')).toHaveLength(0);
  });
});

describe("acknowledgements that can't be delivered", () => {
  it('end in the poison queue after the retries, logged, and the task goes on (not failed, no failure notice)', async () => {
    const mailbox = 'ack-poison@company.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: 'hank@partner.test' });
    await stack.appendMail(mailbox, buildMail({ from: 'hank@partner.test', to: mailbox, subject: 'Badge' }));
    const task = await drainOne(env);
    stack.smtp.smtpAuthDisabled.add(mailbox);
    try {
      const run = await sendReplies(env);
      expect(run).toMatchObject({ succeeded: 0, poisoned: 1 });
      const logs: string[] = [];
      const poisoned = await runQueueFunction(stack, env, 'replyPoison');
      logs.push(...poisoned.logs);
      expect(poisoned.succeeded).toBe(1);
      expect(logs.join('\n')).toContain(
        `Acknowledgements could not be delivered after their retries; their tasks are not affected {"mailbox":"${mailbox}","taskIds":"${task.taskId}"}`,
      );
      const row = await table(stack, 'inboxqMessages').getEntity<{ state: string }>(
        encodeURIComponent(mailbox),
        task.taskId,
      );
      expect(row.state).toBe('queued');
    } finally {
      stack.smtp.smtpAuthDisabled.delete(mailbox);
    }
    expect(await inboxOf('hank@partner.test')).toHaveLength(0);
    // The worker's answer still goes out.
    await worker.reply({ taskId: task.taskId, mailbox, text: 'Your badge is ready.' });
    expect(await sendReplies(env)).toMatchObject({ succeeded: 1 });
    expect((await inboxOf('hank@partner.test')).map((m) => m.text?.trim())).toEqual(['Your badge is ready.']);
  });
});

describe('Markdown replies', () => {
  it('arrive with the Markdown as text, rendered and styled HTML, and the attachment intact', async () => {
    const mailbox = 'markdown@company.test';
    const sender = 'gina@partner.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: sender, INBOXQ_ACKNOWLEDGE: 'false' });
    await stack.appendMail(
      mailbox,
      buildMail({ from: sender, to: mailbox, subject: 'Q3 summary', messageId: '<q3-summary@partner.test>' }),
    );
    const task = await drainOne(env);

    const pdf = Buffer.concat([Buffer.from('%PDF-1.7\n'), randomBytes(200_000)]);
    const attachment = await worker.putReplyAttachment(task, 'q3-report.pdf', pdf, 'application/pdf');
    const markdown = [
      '# Q3 summary',
      '',
      '| Month | Revenue |',
      '|:------|--------:|',
      '| Jul   |      14 |',
      '| Aug   |      12 |',
      '',
      'Details are in [the finance portal](https://finance.example.com/q3?view=full&lang=en).',
      '',
      '<script>alert("x")</script>',
    ].join('\n');
    const reply = {
      type: 'inboxq.reply',
      version: 1,
      taskId: task.taskId,
      mailbox,
      markdown,
      attachments: [attachment],
    };
    expect(validReply(reply), JSON.stringify(validReply.errors)).toBe(true);
    expect(validReply({ ...reply, markdown: undefined, text: '' })).toBe(false);
    await worker.reply(reply);
    expect(await sendReplies(env)).toMatchObject({ succeeded: 1, failed: 0 });

    const [mail] = (await stack.readFolder(sender, 'INBOX')).map((m) => m.source);
    const parsed = await simpleParser(mail!);
    expect(parsed.inReplyTo).toBe('<q3-summary@partner.test>');
    // text/plain: the Markdown as written.
    expect(parsed.text!.trim()).toBe(markdown);
    // text/html: rendered, sanitized, styled inline.
    const html = parsed.html as string;
    expect(html).toMatch(/<table style="border-collapse:collapse[^"]*">/);
    expect(html).toMatch(/<th style="[^"]*border:1px solid #d0d7de[^"]*">Month<\/th>/);
    expect(html).toMatch(/<td style="[^"]*text-align:right">14<\/td>/);
    expect(html).toContain(
      '<a href="https://finance.example.com/q3?view=full&amp;lang=en" style="color:#0563c1;text-decoration:underline">the finance portal</a>',
    );
    expect(html).not.toContain('<script');
    expect(html).toContain('&lt;script&gt;');
    // The attachment, byte for byte.
    expect(parsed.attachments).toHaveLength(1);
    const [received] = parsed.attachments;
    expect(received).toMatchObject({ filename: 'q3-report.pdf', contentType: 'application/pdf', size: pdf.length });
    expect(createHash('sha256').update(received!.content).digest('hex')).toBe(
      createHash('sha256').update(pdf).digest('hex'),
    );
    // Both parts side by side, with the attachment beside them.
    const source = mail!.toString('latin1');
    expect(source).toMatch(/Content-Type: multipart\/mixed/);
    expect(source).toMatch(/Content-Type: multipart\/alternative/);
  });

  it('a reply with both text and markdown, or markdown with html, is refused naming the fields', async () => {
    const task = { taskId: 'a'.repeat(32), mailbox: 'markdown@company.test' };
    await expect(worker.reply({ ...task, text: 'x', markdown: '*x*' })).rejects.toThrow(
      'text: give exactly one of text and markdown',
    );
    await expect(worker.reply({ ...task, markdown: '*x*', html: '<p>x</p>' })).rejects.toThrow(
      'html: html goes with text; markdown is rendered to HTML by inboxq',
    );
    await expect(worker.reply({ ...task, replyId: 'inboxq-ack', text: 'x' })).rejects.toThrow(
      'replyId: ids starting with "inboxq-" are inboxq\'s own',
    );
  });
});

describe('Outlook threading', () => {
  /** A header of a mail as it arrived over IMAP (the raw field, unfolded). */
  const header = (m: ParsedMail, name: string) => {
    const value = m.headers.get(name.toLowerCase());
    return typeof value === 'string' ? value : undefined;
  };

  it("every mail inboxq sends carries Thread-Topic and the original's Thread-Index extended by a child block", async () => {
    const mailbox = 'outlook-thread@company.test';
    const sender = 'olivia@partner.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: sender });
    const original = newThreadIndex(new Date(Date.now() - 3_600_000), randomBytes(16)).toString('base64');
    await stack.appendMail(
      mailbox,
      buildMail({
        from: `Olivia <${sender}>`,
        to: mailbox,
        subject: 'RE: Fwd: Cabinet quote',
        extraHeaders: [`Thread-Index: ${original}`, 'Thread-Topic: Cabinet quote'],
      }),
    );
    const task = await drainOne(env);
    await worker.reply({ taskId: task.taskId, mailbox, markdown: 'Here it is.' });
    await sendReplies(env);
    const sent = (await inboxOf(sender)).filter((m) => m.messageId?.startsWith(`<inboxq.${task.taskId}.`));
    // The acknowledgement and the answer.
    expect(sent).toHaveLength(2);
    for (const m of sent) {
      expect(header(m, 'Thread-Topic')).toBe('Cabinet quote');
      const index = readThreadIndex(header(m, 'Thread-Index'));
      expect(index, m.messageId).not.toBeNull();
      expect(index!.subarray(0, 22).toString('base64')).toBe(original);
      const decoded = decodeThreadIndex(index!);
      expect(decoded.children).toHaveLength(1);
      // Sent within the last minutes: the child's delta is about the hour since the original's header.
      const sentAt = decoded.time.getTime() + Number(decoded.children[0]!.deltaTicks / 10_000n);
      expect(Math.abs(sentAt - Date.now())).toBeLessThan(120_000);
    }
  });

  it('a mail without a Thread-Index: its acknowledgement and answer begin one conversation index, the same for both', async () => {
    const mailbox = 'outlook-new@company.test';
    const sender = 'noah@partner.test';
    const env = stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: sender });
    await stack.appendMail(mailbox, buildMail({ from: sender, to: mailbox, subject: 'Délai de livraison' }));
    const task = await drainOne(env);
    await worker.reply({ taskId: task.taskId, mailbox, text: 'Two weeks.' });
    await sendReplies(env);
    const sent = (await inboxOf(sender)).filter((m) => m.messageId?.startsWith(`<inboxq.${task.taskId}.`));
    expect(sent).toHaveLength(2);
    const indexes = sent.map((m) => readThreadIndex(header(m, 'Thread-Index')));
    expect(indexes.every((i) => i?.length === 27)).toBe(true);
    expect(indexes[0]!.subarray(0, 22).equals(indexes[1]!.subarray(0, 22))).toBe(true);
    // A non-ASCII topic travels as an RFC 2047 encoded word (UTF-8, Q), which clients decode.
    expect(sent.map((m) => header(m, 'Thread-Topic'))).toEqual([
      '=?UTF-8?Q?D=C3=A9lai_de_livraison?=',
      '=?UTF-8?Q?D=C3=A9lai_de_livraison?=',
    ]);
  });
});
