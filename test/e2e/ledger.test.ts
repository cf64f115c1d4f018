/**
 * What the ledger guarantees beyond a single run: overlapping runs, a renumbered mailbox
 * (UIDVALIDITY change), and retention.
 */
import { existsSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import { MAIL_CONTAINER } from '../../shared/contract/messages';
import { drainMailbox, type DrainStep } from '../../shared/drain/drain';
import { partitionKey } from '../../shared/ledger/rows';
import { memoryLogger } from '../../shared/telemetry/log';
import { buildMail } from '../helpers/mail';
import { clearTasks, takeAllTasks } from '../helpers/stack';

let stack: LocalStack;
beforeAll(async () => {
  stack = await LocalStack.start();
});
afterAll(async () => {
  await stack?.stop();
});

const settingsFor = (mailbox: string, extra: Record<string, string> = {}) =>
  stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test', ...extra });

describe('overlapping runs', () => {
  it('two runs started together: one drains, the other sees the lease and touches nothing', async () => {
    const mailbox = 'overlap@company.test';
    await clearTasks(stack);
    for (let i = 0; i < 10; i++)
      await stack.appendMail(mailbox, buildMail({ from: `p${i}@partner.test`, to: mailbox }));
    const rt = runtimeFor(settingsFor(mailbox));
    const [a, b] = await Promise.all([
      drainMailbox({ ...rt, log: memoryLogger() }),
      drainMailbox({ ...rt, log: memoryLogger() }),
    ]);
    expect([a.stoppedBecause, b.stoppedBecause].sort()).toEqual(['empty', 'leased-elsewhere']);
    expect(a.counts.queued + b.counts.queued).toBe(10);
    const tasks = (await takeAllTasks(stack)).filter((t) => t.mailbox === mailbox);
    expect(tasks).toHaveLength(10);
    expect(new Set(tasks.map((t) => t.taskId)).size).toBe(10);
    // The lease was released: the next run is not held off.
    expect((await drainMailbox({ ...rt, log: memoryLogger() })).stoppedBecause).toBe('empty');
  });
});

describe('a renumbered mailbox', () => {
  it('a new UIDVALIDITY with a mail half-processed: the mail is found by its Message-ID, not queued again', async () => {
    const mailbox = 'uidvalidity@company.test';
    await clearTasks(stack);
    await stack.appendMail(
      mailbox,
      buildMail({ from: 'a@partner.test', to: mailbox, messageId: '<renumbered@partner.test>' }),
    );
    await stack.appendMail(
      mailbox,
      buildMail({ from: 'b@partner.test', to: mailbox, messageId: '<untouched@partner.test>' }),
    );
    const rt = runtimeFor(settingsFor(mailbox));
    const stopAt = (s: DrainStep) => {
      if (s === 'recorded') throw new Error('interrupted');
    };
    await expect(drainMailbox({ ...rt, log: memoryLogger(), onStep: stopAt })).rejects.toThrow('interrupted');
    const before = await rt.ledger.listMessages(mailbox);

    // Renumber: Dovecot forgets its UID list and indexes, and gives the mailbox a new UIDVALIDITY.
    await stack.dovecot.stop();
    const maildir = path.join(stack.dir, 'dovecot', 'home', mailbox, 'Maildir');
    for (const f of readdirSync(maildir)) if (f.startsWith('dovecot')) rmSync(path.join(maildir, f), { force: true });
    expect(existsSync(path.join(maildir, 'dovecot-uidlist'))).toBe(false);
    // Dovecot takes the new UIDVALIDITY from the clock, in seconds.
    await new Promise((r) => setTimeout(r, 1100));
    await stack.dovecot.restart();

    const summary = await drainMailbox({ ...rt, log: memoryLogger() });
    const after = await rt.ledger.listMessages(mailbox);
    expect(after).toHaveLength(2);
    expect(after.find((r) => r.messageId === '<renumbered@partner.test>')!.uidValidity).not.toBe(
      before[0]!.uidValidity,
    );
    expect(summary.counts.seen).toBe(2);
    expect(summary.counts.resumed).toBeGreaterThanOrEqual(1);
    const tasks = (await takeAllTasks(stack)).filter((t) => t.mailbox === mailbox);
    expect(tasks.map((t) => t.messageId).sort()).toEqual(['<renumbered@partner.test>', '<untouched@partner.test>']);
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
  });
});

describe('retention', () => {
  it('stored mail and ledger rows older than INBOXQ_MAIL_RETENTION_DAYS are deleted by a later run', async () => {
    const mailbox = 'retention@company.test';
    const rt = runtimeFor(settingsFor(mailbox, { INBOXQ_MAIL_RETENTION_DAYS: '7' }));
    await stack.appendMail(
      mailbox,
      buildMail({
        from: 'a@partner.test',
        to: mailbox,
        attachments: [{ filename: 'f.txt', contentType: 'text/plain', content: Buffer.from('x') }],
      }),
    );
    await drainMailbox({ ...rt, log: memoryLogger() });
    const [row] = await rt.ledger.listMessages(mailbox);
    const container = await rt.storage.container(MAIL_CONTAINER);
    const blobs = async () => {
      const names = [];
      for await (const b of container.listBlobsFlat({ prefix: `${partitionKey(mailbox)}/${row!.taskId}/` }))
        names.push(b.name);
      return names;
    };
    // The mail itself is small enough to travel inline; its attachment is a blob.
    expect((await blobs()).length).toBeGreaterThanOrEqual(1);

    const sixDays = await drainMailbox({ ...rt, log: memoryLogger(), now: () => Date.now() + 6 * 86_400_000 });
    expect(sixDays.counts.expired).toBe(0);
    const eightDays = await drainMailbox({ ...rt, log: memoryLogger(), now: () => Date.now() + 8 * 86_400_000 });
    expect(eightDays.counts.expired).toBe(1);
    expect(await rt.ledger.listMessages(mailbox)).toHaveLength(0);
    expect(await blobs()).toEqual([]);
  });
});
