/**
 * Exchange Online's limits as the local stack enforces them: 3 concurrent SMTP connections per
 * mailbox (432 4.3.2 beyond, at DATA or at AUTH), sending throttled or over quota (550 5.2.25x,
 * 554 5.2.0 SubmissionQuotaExceeded), and an IMAP back-off of minutes.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { main } from '../../cli/inboxq';
import { runtimeFor } from '../../localstack/runtime';
import { encodeQueueMessage } from '../../shared/contract/messages';
import { drainMailbox } from '../../shared/drain/drain';
import { readPace } from '../../shared/ledger/pacing';
import { SmtpSlots } from '../../shared/ledger/smtp-slots';
import type { MailboxStatus } from '../../shared/ops/status';
import { listParkedReplies } from '../../shared/reply/parked';
import { sendReply, THROTTLED_SENDING_PAUSE_MS } from '../../shared/reply/reply';
import { closeSmtpPools } from '../../shared/reply/smtp';
import { memoryLogger } from '../../shared/telemetry/log';
import { HostProcess } from '../helpers/host';
import { useProxiedStack } from '../helpers/imap-proxy';
import { buildMail } from '../helpers/mail';
import { queue, REPLIES_QUEUE } from '../helpers/stack';

const local = useProxiedStack();
const hosts: HostProcess[] = [];
// Registered after the stack's: vitest runs afterAll hooks last-registered first, so the hosts stop before the stack.
afterAll(async () => {
  await Promise.all(hosts.map((h) => h.kill()));
});

/** A mailbox with `n` accepted tasks (acknowledgements off, no pace), and their task ids. */
async function acceptedTasks(mailbox: string, n: number, extra: Record<string, string> = {}) {
  const settings = local.stack.settings(mailbox, {
    INBOXQ_AUTHORIZED_SENDERS: '*@partner.test',
    INBOXQ_ACKNOWLEDGE: 'false',
    INBOXQ_SMTP_MAX_PER_MINUTE: '0',
    INBOXQ_TASKS_QUEUE: `tasks-${mailbox.split('@')[0]}`,
    ...extra,
  });
  for (let i = 0; i < n; i++)
    await local.stack.appendMail(mailbox, buildMail({ from: `p${i}@partner.test`, to: mailbox, subject: `mail ${i}` }));
  const summary = await drainMailbox({ ...runtimeFor(settings), log: memoryLogger() });
  return { settings, taskIds: summary.outcomes.map((o) => o.taskId!) };
}

const reply = (mailbox: string, taskId: string, text = 'the answer') => ({
  type: 'inboxq.reply',
  version: 1,
  taskId,
  mailbox,
  text,
});

describe('3 concurrent SMTP connections per mailbox', () => {
  it('two instances sending 40 replies at once stay within the limit: each delivered once, no poison, at most two deliveries, no error lines', async () => {
    const mailbox = 'two-instances@company.test';
    const { settings, taskIds } = await acceptedTasks(mailbox, 40);
    const replies = queue(local.stack, REPLIES_QUEUE);
    await replies.createIfNotExists();
    for (const taskId of taskIds) await replies.sendMessage(encodeQueueMessage(reply(mailbox, taskId)));
    // No settings file: the settings come from the environment, as in Azure.
    const emptySettings = path.join(local.stack.dir, 'empty.settings.json');
    writeFileSync(emptySettings, '{ "IsEncrypted": false, "Values": {} }');
    const instance = () =>
      HostProcess.start(
        path.resolve('.'),
        {
          ...settings,
          INBOXQ_DRAIN_SCHEDULE: '0 0 0 1 1 *',
          AzureFunctionsJobHost__extensions__queues__maxPollingInterval: '00:00:01',
        },
        { main: 'build/functions/*.js', settingsFile: emptySettings },
      );
    const [a, b] = [instance(), instance()];
    hosts.push(a, b);
    const ids = taskIds.map((t) => `<inboxq.${t}.reply@company.test>`);
    const delivered = () => local.stack.smtp.accepted.filter((m) => ids.includes(m.messageId ?? ''));
    for (const deadline = Date.now() + 90_000; delivered().length < 40 && Date.now() < deadline;)
      await new Promise((r) => setTimeout(r, 250));
    await Promise.all([a.stop(), b.stop()]);

    const perId = new Map<string, number>();
    for (const m of delivered()) perId.set(m.messageId!, (perId.get(m.messageId!) ?? 0) + 1);
    expect(perId.size).toBe(40);
    expect([...perId.values()].every((n) => n === 1)).toBe(true);
    expect(local.stack.smtp.peakConnections.get(mailbox)).toBeLessThanOrEqual(3);
    expect(local.stack.smtp.limitRefusals.filter((r) => r.mailbox === mailbox)).toEqual([]);
    const rt = runtimeFor(settings);
    for (const taskId of taskIds) {
      const row = await rt.ledger.getReply(mailbox, taskId, 'reply');
      expect(row?.state).toBe('sent');
      expect(row!.attempts).toBeLessThanOrEqual(2);
    }
    expect(await listParkedReplies(rt.storage, mailbox)).toEqual([]);
    expect((await queue(local.stack, `${REPLIES_QUEUE}-poison`).getProperties()).approximateMessagesCount ?? 0).toBe(0);
    const output = a.output + b.output;
    expect(output).not.toMatch(/Reply failed|error/i);
    // Which instance sent how many is timing: one alone sends on all 3 connections, and one that
    // finds them all held says so and gets the third at its next delivery (attempts above, and the
    // slots' handover below).
    const sentBy = [a, b].map((h) => (h.output.match(/Reply sent/g) ?? []).length);
    expect(sentBy[0]! + sentBy[1]!).toBe(40);
  }, 150_000);

  it('432 at AUTH is a deferral, not a refused token; the reply goes out on the next delivery', async () => {
    const mailbox = 'busy-auth@company.test';
    const { settings, taskIds } = await acceptedTasks(mailbox, 1);
    local.stack.smtp.limitAnsweredAt = 'auth';
    local.stack.smtp.connectionLimit = 1;
    // Another client holds the mailbox's one connection.
    const holder = await local.stack.smtpConnection(mailbox);
    try {
      const log = memoryLogger();
      const result = await sendReply(reply(mailbox, taskIds[0]!), { ...runtimeFor(settings), log });
      expect(result.outcome).toBe('deferred');
      const lines = log.lines.map((l) => `${l.level} ${l.line}`).join('\n');
      expect(lines).toMatch(/^info The SMTP connections of the mailbox are all in use; reply deferred by \d+ s/m);
      expect(lines).not.toContain('refused the cached token');
      expect(local.stack.smtp.limitRefusals).toContainEqual({ mailbox, at: 'auth' });
      const row = await runtimeFor(settings).ledger.getReply(mailbox, taskIds[0]!, 'reply');
      expect(row).toMatchObject({ state: 'unsent' });
      expect(row!.lastResponse).toContain('432 4.3.2 Concurrent connections limit exceeded');
    } finally {
      await holder.close();
      local.stack.smtp.limitAnsweredAt = 'data';
      local.stack.smtp.connectionLimit = 3;
    }
    const again = await sendReply(reply(mailbox, taskIds[0]!), { ...runtimeFor(settings), log: memoryLogger() });
    expect(again.outcome).toBe('sent');
  });
});

describe('one instance, or several, on the 3 connections', () => {
  it('an instance alone sends on all 3: 12 replies at once, each sent once, no refusal', async () => {
    const mailbox = 'alone@company.test';
    const { settings, taskIds } = await acceptedTasks(mailbox, 12);
    const rt = runtimeFor(settings);
    try {
      const results = await Promise.all(
        taskIds.map((t) => sendReply(reply(mailbox, t), { ...rt, log: memoryLogger() })),
      );
      expect(results.map((r) => r.outcome)).toEqual(taskIds.map(() => 'sent'));
      expect(local.stack.smtp.peakConnections.get(mailbox)).toBe(3);
      expect(local.stack.smtp.limitRefusals.filter((r) => r.mailbox === mailbox)).toEqual([]);
    } finally {
      await closeSmtpPools();
    }
  });

  it('an instance that finds every slot held says so; the holder gives back what is past its share, and takes no surplus while the word stands', async () => {
    const mailbox = 'slots-handover@company.test';
    const { storage } = runtimeFor(local.stack.settings(mailbox));
    let shift = 0;
    const now = () => Date.now() + shift;
    const slots = (holder: string) => new SmtpSlots(storage, mailbox, { holder, now });
    const a = slots('a');
    expect(await a.acquire(3, 2)).toBe(3);
    const b = slots('b');
    expect(await b.acquire(3, 2)).toBe(0);
    expect(await a.othersWant()).toBe(true);
    expect(await b.othersWant()).toBe(false);
    await a.releaseBeyond(2);
    expect(a.count).toBe(2);
    expect(await b.acquire(3, 2)).toBe(1);
    // Everything given back: a new pool of a's takes its share, not the surplus, while b's word stands.
    await a.release();
    await b.release();
    expect(await slots('a').acquire(3, 2)).toBe(2);
    await slots('a').release();
    shift = 31_000;
    const later = slots('a');
    expect(await later.acquire(3, 2)).toBe(3);
    await later.release();
    // Three instances taking slots at once, each from one read of the rows: never more than 3 held.
    const racing = ['x', 'y', 'z'].map(slots);
    const held = await Promise.all(racing.map((r) => r.acquire(3, 2)));
    expect(held.reduce((n, h) => n + h, 0)).toBeLessThanOrEqual(3);
    expect(held.some((h) => h > 0)).toBe(true);
    await Promise.all(racing.map((r) => r.release()));
  });
});

describe('Exchange stops a mailbox from sending', () => {
  for (const [what, fault] of [
    ['continuous-error throttling (550 5.2.251)', { code: 550, text: '5.2.251 Too many errors; try again later' }],
    [
      'the daily quota (554 5.2.0 SubmissionQuotaExceeded)',
      {
        code: 554,
        text: '5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message due to a permanent exception',
      },
    ],
  ] as const) {
    it(`${what}: the reply is deferred, not failed; every reply waits without connecting; then they go out`, async () => {
      const mailbox = `paused-${fault.code}@company.test`;
      const { settings, taskIds } = await acceptedTasks(mailbox, 2);
      const rt = runtimeFor(settings);
      local.stack.smtp.dataFaults.push({ ...fault });
      const log = memoryLogger();
      const first = await sendReply(reply(mailbox, taskIds[0]!), { ...rt, log });
      expect(first.outcome).toBe('deferred');
      expect(log.lines.filter((l) => l.level === 'error')).toEqual([]);
      expect(log.lines.map((l) => l.line).join('\n')).toContain('Exchange stopped the mailbox from sending');
      const pace = await readPace(rt.storage, mailbox);
      expect(pace.blockedUntil).toBeGreaterThan(Date.now() + THROTTLED_SENDING_PAUSE_MS - 60_000);
      const status = JSON.parse((await main(['status', '--json'], settings)).stdout) as MailboxStatus;
      expect(status.pacing.pausedUntil).toBe(new Date(pace.blockedUntil).toISOString());
      // The other reply waits too, without a connection.
      const accepted = local.stack.smtp.accepted.length;
      const second = await sendReply(reply(mailbox, taskIds[1]!), { ...rt, log: memoryLogger() });
      expect(second.outcome).toBe('deferred');
      expect(local.stack.smtp.accepted.length).toBe(accepted);
      // Once the pause is over, both go out.
      const later = () => Date.now() + THROTTLED_SENDING_PAUSE_MS + 1000;
      for (const taskId of taskIds)
        expect((await sendReply(reply(mailbox, taskId), { ...rt, log: memoryLogger(), now: later })).outcome).toBe(
          'sent',
        );
    });
  }
});

describe('an IMAP back-off of minutes', () => {
  it('ends the run; the next runs make no IMAP connection until it has passed, then the mailbox drains; nothing lost', async () => {
    const mailbox = 'backoff@company.test';
    const settings = local.stack.settings(mailbox, {
      INBOXQ_AUTHORIZED_SENDERS: '*@partner.test',
      INBOXQ_ACKNOWLEDGE: 'false',
      INBOXQ_IMAP_PORT: String(local.proxy.port),
      INBOXQ_TASKS_QUEUE: 'tasks-backoff',
    });
    for (let i = 0; i < 3; i++)
      await local.stack.appendMail(mailbox, buildMail({ from: `b${i}@partner.test`, to: mailbox }));
    const rt = runtimeFor(settings);
    // The listing (a few small mails: it brings their sources too) is the run's first FETCH.
    local.proxy.throttle(/FETCH/, 300_000, 1);
    const log = memoryLogger();
    const first = await drainMailbox({ ...rt, log });
    expect(first.stoppedBecause).toBe('throttled');
    expect(first.counts.queued).toBe(0);
    expect(log.lines.map((l) => l.line).join('\n')).toMatch(/Exchange throttled the mailbox; its runs wait until /);
    expect(await local.stack.readFolder(mailbox, 'INBOX')).toHaveLength(3);

    const status = JSON.parse((await main(['status', '--json'], settings)).stdout) as MailboxStatus;
    expect(Date.parse(status.imapBackoffUntil!)).toBeGreaterThan(Date.now() + 240_000);
    const connections = local.proxy.connections;
    for (const minutes of [1, 4]) {
      const waiting = await drainMailbox({ ...rt, log: memoryLogger(), now: () => Date.now() + minutes * 60_000 });
      expect(waiting.stoppedBecause).toBe('throttled');
    }
    expect(local.proxy.connections).toBe(connections);

    const after = await drainMailbox({ ...rt, log: memoryLogger(), now: () => Date.now() + 301_000 });
    expect(after.counts.queued).toBe(3);
    expect(await local.stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
    expect(local.proxy.connections).toBe(connections + 1);
  }, 90_000);
});

describe('mailbox retention', () => {
  it('deletes processed and quarantined mail and inboxq’s own copies in Sent past INBOXQ_MAILBOX_RETENTION_DAYS, nothing else', async () => {
    const mailbox = 'retention@company.test';
    const day = 86_400_000;
    const old = new Date(Date.now() - 40 * day);
    const recent = new Date(Date.now() - 2 * day);
    const mail = (messageId: string) =>
      Buffer.from(`From: ${mailbox}\r\nTo: x@partner.test\r\nMessage-ID: ${messageId}\r\nSubject: s\r\n\r\nbody\r\n`);
    const client = await local.stack.imap(mailbox);
    try {
      for (const folder of ['inboxq-processed', 'inboxq-quarantine']) await client.mailboxCreate(folder);
      await client.append('inboxq-processed', mail('<p-old-1@partner.test>'), [], old);
      await client.append('inboxq-processed', mail('<p-old-2@partner.test>'), [], old);
      await client.append('inboxq-processed', mail('<p-new@partner.test>'), [], recent);
      await client.append('inboxq-quarantine', mail('<q-old@partner.test>'), [], old);
      await client.append('inboxq-quarantine', mail('<q-new@partner.test>'), [], recent);
      await client.append('Sent', mail('<inboxq.0123456789abcdef0123456789abcdef.reply@company.test>'), [], old);
      await client.append('Sent', mail('<written-by-a-person@company.test>'), [], old);
      await client.append('Sent', mail('<inboxq.fedcba9876543210fedcba9876543210.reply@company.test>'), [], recent);
    } finally {
      await client.logout();
    }
    const ids = async (folder: string) =>
      (await local.stack.readFolder(mailbox, folder))
        .map((m) => /^Message-ID: (.*)$/im.exec(m.source.toString())![1]!.trim())
        .sort();

    // Switched off: nothing is deleted.
    const keep = local.stack.settings(mailbox, { INBOXQ_MAILBOX_RETENTION_DAYS: '0' });
    expect((await drainMailbox({ ...runtimeFor(keep), log: memoryLogger() })).counts.deletedFromMailbox).toBe(0);
    expect(await ids('inboxq-processed')).toHaveLength(3);

    const settings = local.stack.settings(mailbox, { INBOXQ_MAILBOX_RETENTION_DAYS: '30' });
    const log = memoryLogger();
    const summary = await drainMailbox({ ...runtimeFor(settings), log });
    expect(summary.counts.deletedFromMailbox).toBe(4);
    expect(await ids('inboxq-processed')).toEqual(['<p-new@partner.test>']);
    expect(await ids('inboxq-quarantine')).toEqual(['<q-new@partner.test>']);
    expect(await ids('Sent')).toEqual([
      '<inboxq.fedcba9876543210fedcba9876543210.reply@company.test>',
      '<written-by-a-person@company.test>',
    ]);
    expect(log.lines.map((l) => l.line).join('\n')).toContain(
      'Deleted mail past the mailbox retention {"mailbox":"retention@company.test"',
    );
    // Once an hour per mailbox in a warm instance: the next run does not look again.
    expect((await drainMailbox({ ...runtimeFor(settings), log: memoryLogger() })).counts.deletedFromMailbox).toBe(0);
  });
});
