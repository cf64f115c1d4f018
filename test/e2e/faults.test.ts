/**
 * Fault injection against the real local servers: each fault is retried with bounded backoff or
 * left for the next run, and never drops a mail or sends a reply twice.
 */
import { simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';

import { readHostJson } from '../../localstack/host/settings';
import { TcpProxy } from '../../localstack/proxies';
import { runtimeFor } from '../../localstack/runtime';
import { encodeQueueMessage } from '../../shared/contract/messages';
import { drainMailbox } from '../../shared/drain/drain';
import { ImapError, KeyVaultError, StorageError } from '../../shared/errors';
import { sendReply } from '../../shared/reply/reply';
import { memoryLogger } from '../../shared/telemetry/log';
import { runQueueFunction } from '../helpers/app';
import { useProxiedStack } from '../helpers/imap-proxy';
import { buildMail } from '../helpers/mail';
import { clearTasks, expectAllQueuedOnce, queue, REPLIES_QUEUE } from '../helpers/stack';

const local = useProxiedStack();

const SENDERS = '*@partner.test';
/** The policy these tests drain with; no acknowledgements, which would add to the mail they count. */
const POLICY = { INBOXQ_AUTHORIZED_SENDERS: SENDERS, INBOXQ_ACKNOWLEDGE: 'false' };

async function seed(mailbox: string, n: number): Promise<void> {
  for (let i = 0; i < n; i++)
    await local.stack.appendMail(mailbox, buildMail({ from: `p${i}@partner.test`, to: mailbox, subject: `mail ${i}` }));
}

async function drain(
  settings: Record<string, string | undefined>,
  onStep?: Parameters<typeof drainMailbox>[0]['onStep'],
) {
  const log = memoryLogger();
  const rt = runtimeFor(settings);
  const summary = await drainMailbox({ ...rt, log, ...(onStep ? { onStep } : {}) });
  return { summary, log };
}

describe('IMAP faults', () => {
  it('Dovecot stopped mid-drain: the run fails, nothing is lost, the next run finishes', async () => {
    const mailbox = 'dovecot-down@company.test';
    const settings = local.stack.settings(mailbox, POLICY);
    await clearTasks(local.stack);
    await seed(mailbox, 4);
    let stopped = false;
    const failure = await drain(settings, async (step) => {
      if (step === 'recorded' && !stopped) {
        stopped = true;
        await local.stack.dovecot.stop();
      }
    }).catch((e: Error) => e);
    expect(failure).toBeInstanceOf(ImapError);
    await local.stack.dovecot.restart();
    const { summary } = await drain(settings);
    expect(summary.counts.resumed).toBeGreaterThanOrEqual(1);
    await expectAllQueuedOnce(local.stack, settings, mailbox, 4);
  });

  it('a connection dropped in the middle of a run leaves the mail for the next run', async () => {
    const mailbox = 'dropped@company.test';
    const settings = local.stack.settings(mailbox, { ...POLICY, INBOXQ_IMAP_PORT: String(local.proxy.port) });
    await clearTasks(local.stack);
    await seed(mailbox, 3);
    local.proxy.dropOn(/UID MOVE/);
    const failure = await drain(settings).catch((e: Error) => e);
    expect(failure).toBeInstanceOf(ImapError);
    expect(local.proxy.injected).toContainEqual(expect.stringMatching(/^drop UID MOVE /));
    await drain(settings);
    await expectAllQueuedOnce(local.stack, settings, mailbox, 3);
  });

  it('Exchange throttling a FETCH: imapflow waits out the suggested backoff and fetches again', async () => {
    const mailbox = 'throttled-fetch@company.test';
    const settings = local.stack.settings(mailbox, { ...POLICY, INBOXQ_IMAP_PORT: String(local.proxy.port) });
    await clearTasks(local.stack);
    await seed(mailbox, 2);
    const before = local.proxy.injected.length;
    local.proxy.throttle(/BODY\.PEEK\[\]/, 300, 1);
    const started = Date.now();
    const { summary } = await drain(settings);
    // The first FETCH of a source is the listing's: a few small mails come whole with it.
    expect(local.proxy.injected.slice(before)).toEqual([expect.stringMatching(/^throttle FETCH 1:\*/)]);
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(summary.counts.queued).toBe(2);
    await expectAllQueuedOnce(local.stack, settings, mailbox, 2);
  });

  it('Exchange throttling a MOVE: inboxq tries it once more after the backoff', async () => {
    const mailbox = 'throttled-move@company.test';
    const settings = local.stack.settings(mailbox, { ...POLICY, INBOXQ_IMAP_PORT: String(local.proxy.port) });
    await clearTasks(local.stack);
    await seed(mailbox, 2);
    local.proxy.throttle(/UID MOVE/, 300, 1);
    const started = Date.now();
    const { summary } = await drain(settings);
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    expect(summary.counts).toMatchObject({ queued: 2, throttled: 1 });
    await expectAllQueuedOnce(local.stack, settings, mailbox, 2);
  });

  it('throttled again on the retry: the run stops, and the next run continues', async () => {
    const mailbox = 'throttled-twice@company.test';
    const settings = local.stack.settings(mailbox, { ...POLICY, INBOXQ_IMAP_PORT: String(local.proxy.port) });
    await clearTasks(local.stack);
    await seed(mailbox, 2);
    local.proxy.throttle(/UID MOVE/, 100, 2);
    const failure = await drain(settings).catch((e: Error) => e);
    expect(failure).toBeInstanceOf(ImapError);
    expect((failure as ImapError).failure).toBe('throttled');
    expect((failure as ImapError).message).toContain('Exchange throttled the IMAP session');
    await drain(settings);
    await expectAllQueuedOnce(local.stack, settings, mailbox, 2);
  });
});

describe('Azure faults', () => {
  it('Storage unavailable: the run fails naming Storage, nothing leaves the inbox, the next run finishes', async () => {
    const mailbox = 'storage-down@company.test';
    const proxies = [
      new TcpProxy(local.stack.azurite.blobPort),
      new TcpProxy(local.stack.azurite.queuePort),
      new TcpProxy(local.stack.azurite.tablePort),
    ];
    for (const p of proxies) await p.start();
    try {
      const [blob, q, table] = proxies as [TcpProxy, TcpProxy, TcpProxy];
      const cs = local.stack.azurite.connectionString
        .replace(`:${local.stack.azurite.blobPort}/`, `:${blob.port}/`)
        .replace(`:${local.stack.azurite.queuePort}/`, `:${q.port}/`)
        .replace(`:${local.stack.azurite.tablePort}/`, `:${table.port}/`);
      const settings = local.stack.settings(mailbox, {
        ...POLICY,
        AzureWebJobsStorage: cs,
        INBOXQ_DRAIN_LEASE_SECONDS: '30',
      });
      await clearTasks(local.stack);
      await seed(mailbox, 2);
      let downed = false;
      const failure = await drain(settings, (step) => {
        if (step === 'claimed' && !downed) {
          downed = true;
          for (const p of proxies) p.down();
        }
      }).catch((e: Error) => e);
      expect(failure).toBeInstanceOf(StorageError);
      expect((failure as StorageError).retryable).toBe(true);
      expect((failure as Error).message).toContain('nothing was removed from the inbox');
      expect(await local.stack.readFolder(mailbox, 'INBOX')).toHaveLength(2);
      for (const p of proxies) p.up();
      // The failed run could not release its lease while Storage was down: the mailbox is held
      // until the lease expires, and the next run after that finishes the work.
      const held = await drain(settings);
      expect(held.summary.stoppedBecause).toBe('leased-elsewhere');
      await drainMailbox({ ...runtimeFor(settings), log: memoryLogger(), now: () => Date.now() + 31_000 });
      await expectAllQueuedOnce(local.stack, settings, mailbox, 2);
    } finally {
      for (const p of proxies) await p.stop();
    }
  });

  it('Storage slower than the IMAP socket timeout: NOOPs keep the session, and the run finishes', async () => {
    const mailbox = 'storage-slow@company.test';
    const settings = local.stack.settings(mailbox, { ...POLICY, INBOXQ_IMAP_PORT: String(local.proxy.port) });
    await clearTasks(local.stack);
    await seed(mailbox, 2);
    const from = local.proxy.commands.length;
    let paused = false;
    // A batch's Storage steps that take longer than the 60-s socket timeout imapflow gives a quiet session.
    const { summary } = await drain(settings, async (step) => {
      if (step === 'claimed' && !paused) {
        paused = true;
        await new Promise((resolve) => setTimeout(resolve, 65_000));
      }
    });
    expect(summary.counts.queued).toBe(2);
    expect(local.proxy.commands.slice(from)).toContain('NOOP');
    await expectAllQueuedOnce(local.stack, settings, mailbox, 2);
  }, 120_000);

  it('Key Vault unavailable: the run fails naming the vault, retryable, nothing removed', async () => {
    const mailbox = 'vault-down@company.test';
    const app = local.stack.registerApp();
    await seed(mailbox, 1);
    local.stack.vault.available = false;
    try {
      const failure = await drain(local.stack.settings(mailbox, { ...app.settings, ...POLICY })).catch((e: Error) => e);
      expect(failure).toBeInstanceOf(KeyVaultError);
      expect((failure as KeyVaultError).retryable).toBe(true);
      expect((failure as Error).message).toContain(`Key Vault secret ${app.secretName}`);
    } finally {
      local.stack.vault.available = true;
    }
    expect(await local.stack.readFolder(mailbox, 'INBOX')).toHaveLength(1);
  });
});

describe('SMTP faults', () => {
  async function acceptedTask(mailbox: string, sender: string, extra: Record<string, string> = {}) {
    const settings = local.stack.settings(mailbox, { ...POLICY, ...extra });
    await local.stack.appendMail(mailbox, buildMail({ from: sender, to: mailbox, subject: 'Please do it' }));
    const { summary } = await drain(settings);
    return { settings, taskId: summary.outcomes[0]!.taskId! };
  }

  async function deliverReplies(settings: Record<string, string | undefined>, messages: unknown[]) {
    const replies = queue(local.stack, REPLIES_QUEUE);
    await replies.createIfNotExists();
    for (const m of messages) await replies.sendMessage(encodeQueueMessage(m));
    return runQueueFunction(local.stack, settings, 'reply');
  }

  it('a token the server refuses although it looks fresh is renewed and the reply sent', async () => {
    const app = local.stack.registerApp();
    const { settings, taskId } = await acceptedTask('smtp-expired@company.test', 'e1@partner.test', app.settings);
    local.stack.idp.expiredTokensToIssue = 1;
    const rt = runtimeFor(settings);
    // The drain cached a good token: make the next one (for SMTP) expired by forcing a refresh first.
    await rt.tokens.getToken({ forceRefresh: true });
    const log = memoryLogger();
    const result = await sendReply(
      { type: 'inboxq.reply', version: 1, taskId, mailbox: 'smtp-expired@company.test', text: 'ok' },
      { ...rt, log },
    );
    expect(result.outcome).toBe('sent');
    expect(log.lines.map((l) => l.line).join('\n')).toContain(
      'SMTP refused the cached token; retrying once with a new one',
    );
    expect(await local.stack.readFolder('e1@partner.test', 'INBOX')).toHaveLength(1);
  });

  it('451 before 250: nothing was sent, so the redelivery sends at once, once', async () => {
    const mailbox = 'smtp-451@company.test';
    const { settings, taskId } = await acceptedTask(mailbox, 'e2@partner.test');
    local.stack.smtp.dataFaults.push({ code: 451, text: '4.3.0 Temporary server error, try again later' });
    const run = await deliverReplies(settings, [{ type: 'inboxq.reply', version: 1, taskId, mailbox, text: 'ok' }]);
    expect(run).toMatchObject({ succeeded: 1, failed: 1, poisoned: 0 });
    expect(run.logs.join('\n')).toContain('deferred the reply (451 4.3.0');
    expect(await local.stack.readFolder('e2@partner.test', 'INBOX')).toHaveLength(1);
  });

  it('421 on connect is retried too', async () => {
    const mailbox = 'smtp-421@company.test';
    const { settings, taskId } = await acceptedTask(mailbox, 'e3@partner.test');
    local.stack.smtp.dataFaults.push({ code: 421, text: '4.7.0 Too many connections' });
    const run = await deliverReplies(settings, [{ type: 'inboxq.reply', version: 1, taskId, mailbox, text: 'ok' }]);
    expect(run).toMatchObject({ succeeded: 1, failed: 1 });
    expect(await local.stack.readFolder('e3@partner.test', 'INBOX')).toHaveLength(1);
  });

  it('a reply that keeps failing ends in the poison queue, its task is marked failed, and the sender gets a notice', async () => {
    const mailbox = 'smtp-poison@company.test';
    const sender = 'e4@partner.test';
    const { settings, taskId } = await acceptedTask(mailbox, sender);
    const { maxDequeueCount } = readHostJson('.', {}).queues;
    for (let i = 0; i < maxDequeueCount; i++)
      local.stack.smtp.dataFaults.push({ code: 451, text: '4.4.7 Message delayed' });
    const run = await deliverReplies(settings, [
      { type: 'inboxq.reply', version: 1, taskId, mailbox, text: 'the answer' },
    ]);
    expect(run).toMatchObject({ poisoned: 1, succeeded: 0 });
    const poisonRun = await runQueueFunction(local.stack, settings, 'replyPoison');
    expect(poisonRun).toMatchObject({ succeeded: 1, failed: 0 });
    const task = await runtimeFor(settings).ledger.getMessage(mailbox, taskId);
    expect(task?.state).toBe('failed');
    const inbox = await local.stack.readFolder(sender, 'INBOX');
    expect(inbox).toHaveLength(1);
    const notice = await simpleParser(inbox[0]!.source);
    expect(notice.text).toContain('could not be delivered');
    expect(notice.inReplyTo).toBeTruthy();
  });

  it('pacing: past the per-minute limit replies are deferred on the queue, not failed', async () => {
    const mailbox = 'paced@company.test';
    const settings = local.stack.settings(mailbox, { ...POLICY, INBOXQ_SMTP_MAX_PER_MINUTE: '3' });
    await seed(mailbox, 5);
    const { summary } = await drain(settings);
    const rt = runtimeFor(settings);
    const replies = queue(local.stack, REPLIES_QUEUE);
    await replies.clearMessages();
    const minuteStart = Math.floor(Date.now() / 60_000) * 60_000 + 10_000;
    const outcomes = [];
    for (const o of summary.outcomes) {
      outcomes.push(
        (
          await sendReply(
            { type: 'inboxq.reply', version: 1, taskId: o.taskId, mailbox, text: 'ok' },
            { ...rt, log: memoryLogger(), now: () => minuteStart },
          )
        ).outcome,
      );
    }
    expect(outcomes).toEqual(['sent', 'sent', 'sent', 'deferred', 'deferred']);
    expect((await replies.getProperties()).approximateMessagesCount).toBe(2);
    expect((await replies.peekMessages()).peekedMessageItems).toHaveLength(0);
  });
});
