/**
 * The next batch's sources fetched while the current batch is stored (shared/drain/steps/read.ts
 * SourceReader), against Dovecot through a proxy that logs the commands and can cut the
 * connection: the FETCH of the second batch goes out before the first batch is moved; a cut during
 * that FETCH fails the run with nothing lost or queued twice; a run that stops at its budget drops
 * what it fetched ahead and leaves its warm session to the next tick, which fetches it again.
 */
import { describe, expect, it } from 'vitest';

import { runtimeFor } from '../../localstack/runtime';
import { largeMail } from '../../localstack/sample-mail';
import { BATCH_SIZE, drainMailbox } from '../../shared/drain/drain';
import { POISON_RUNS } from '../../shared/drain/suspects';
import { ImapError } from '../../shared/errors';
import { MailboxLease, suspectKey } from '../../shared/ledger/lease';
import { LISTED_SOURCE_BYTES } from '../../shared/mailbox/imap';
import { memoryLogger } from '../../shared/telemetry/log';
import { useProxiedStack } from '../helpers/imap-proxy';
import { buildMail } from '../helpers/mail';
import { clearTasks, expectAllQueuedOnce, takeAllTasks } from '../helpers/stack';

const SENDERS = '*@partner.test';
/** Three batches: two full ones and a short one. */
const MAILS = 2 * BATCH_SIZE + 30;

const local = useProxiedStack();

async function seed(mailbox: string, n: number): Promise<void> {
  const mails = Array.from({ length: n }, (_, i) =>
    Buffer.from(buildMail({ from: `p${i % 7}@partner.test`, to: mailbox, subject: `mail ${i}`, body: `mail ${i}` })),
  );
  await local.stack.dropIntoMaildir(mailbox, mails);
}

function settingsFor(mailbox: string) {
  return local.stack.settings(mailbox, {
    INBOXQ_AUTHORIZED_SENDERS: SENDERS,
    INBOXQ_ACKNOWLEDGE: 'false',
    INBOXQ_IMAP_PORT: String(local.proxy.port),
    INBOXQ_MAX_MESSAGES_PER_RUN: String(10 * MAILS),
  });
}

/** A FETCH of whole sources, in the proxy's log of commands. */
const sourceFetch = /^UID FETCH .*BODY\.PEEK\[\]/;

describe('sources fetched ahead', () => {
  it('a run of a few mails: the listing brings the short ones whole, and only a longer one is fetched by itself', async () => {
    const mailbox = 'prefetch-listed@company.test';
    const settings = settingsFor(mailbox);
    await clearTasks(local.stack);
    const short = Array.from({ length: 3 }, (_, i) =>
      Buffer.from(buildMail({ from: 'p@partner.test', to: mailbox, subject: `short ${i}`, body: `short ${i}` })),
    );
    await local.stack.dropIntoMaildir(mailbox, [
      ...short,
      largeMail('p@partner.test', mailbox, LISTED_SOURCE_BYTES, 'past what the listing brings'),
    ]);
    const from = local.proxy.commands.length;
    const summary = await drainMailbox({ ...runtimeFor(settings), log: memoryLogger() });
    expect(summary.counts.queued).toBe(4);
    const fetches = local.proxy.commands.slice(from).filter((c) => c.includes('FETCH'));
    expect(fetches).toHaveLength(2);
    expect(fetches[0]).toMatch(new RegExp(`^FETCH \\(.*BODY\\.PEEK\\[\\]<0\\.${LISTED_SOURCE_BYTES}>`));
    expect(fetches[1]).toMatch(sourceFetch);
    // Each mail whole: the short ones' text, and the long one's attachment at its full size.
    const tasks = (await takeAllTasks(local.stack)).filter((t) => t.mailbox === mailbox);
    expect(tasks).toHaveLength(4);
    expect(tasks.map((t) => t.body.text?.trim()).filter((t) => t?.startsWith('short'))).toEqual(
      expect.arrayContaining(['short 0', 'short 1', 'short 2']),
    );
    const long = tasks.find((t) => t.subject === 'past what the listing brings');
    expect(long?.attachments.map((a) => a.size)).toEqual([LISTED_SOURCE_BYTES]);
    expect(await local.stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
  });

  it("the next batch's FETCH goes out before the current batch is moved, and every mail is queued once", async () => {
    const mailbox = 'prefetch-order@company.test';
    const settings = settingsFor(mailbox);
    await clearTasks(local.stack);
    await seed(mailbox, MAILS);
    const from = local.proxy.commands.length;
    const summary = await drainMailbox({ ...runtimeFor(settings), log: memoryLogger() });
    expect(summary.counts.queued).toBe(MAILS);
    expect(summary.stoppedBecause).toBe('empty');
    // Per batch a FETCH of sources and a MOVE: batch 2's FETCH comes before batch 1's MOVE, batch 3's before batch 2's.
    const commands = local.proxy.commands.slice(from).filter((c) => sourceFetch.test(c) || c.startsWith('UID MOVE'));
    const moves = commands.flatMap((c, i) => (c.startsWith('UID MOVE') ? [i] : []));
    const fetches = commands.flatMap((c, i) => (sourceFetch.test(c) ? [i] : []));
    expect(moves).toHaveLength(3);
    expect(fetches).toHaveLength(3);
    expect(fetches[1]).toBeLessThan(moves[0]!);
    expect(fetches[2]).toBeLessThan(moves[1]!);
    await expectAllQueuedOnce(local.stack, settings, mailbox, MAILS);
  });

  it('a connection cut during the FETCH ahead: the run fails, and the next run finishes with every mail queued once', async () => {
    const mailbox = 'prefetch-cut@company.test';
    const settings = settingsFor(mailbox);
    await clearTasks(local.stack);
    await seed(mailbox, MAILS);
    // Armed once batch 1's sources are in (its 'fetched' steps): the next source FETCH is the one ahead.
    let armed = false;
    const before = local.proxy.injected.length;
    const failure = await drainMailbox({
      ...runtimeFor(settings),
      log: memoryLogger(),
      onStep: (step) => {
        if (step !== 'fetched' || armed) return;
        armed = true;
        local.proxy.dropOn(/BODY\.PEEK\[\]/);
      },
    }).catch((e: Error) => e);
    expect(failure).toBeInstanceOf(ImapError);
    expect(local.proxy.injected.slice(before)).toEqual([expect.stringMatching(/^drop UID FETCH /)]);
    // Nothing of batch 2 on was taken; batch 1 was queued but not moved: the next run resumes it.
    const summary = await drainMailbox({ ...runtimeFor(settings), log: memoryLogger() });
    expect(summary.counts.resumed).toBe(BATCH_SIZE);
    await expectAllQueuedOnce(local.stack, settings, mailbox, MAILS);
  });

  it('a run that stops at its budget with the next batch fetched drops those sources; the next tick, on the same session, drains the rest', async () => {
    const mailbox = 'prefetch-budget@company.test';
    const settings = settingsFor(mailbox);
    await clearTasks(local.stack);
    await seed(mailbox, MAILS);
    const warm = local.warmSession(60_000);
    const rt = runtimeFor(settings);
    // The run's clock passes its budget once batch 1 is moved: batch 2's sources, fetched ahead, are not used.
    let late = 0;
    const first = await drainMailbox({
      ...rt,
      imapSession: warm,
      log: memoryLogger(),
      now: () => Date.now() + late,
      onStep: (step) => {
        if (step === 'removed') late = 24 * 3_600_000;
      },
    });
    expect(first.stoppedBecause).toBe('budget');
    expect(first.counts.queued).toBe(BATCH_SIZE);
    const connections = local.proxy.connections;
    const second = await drainMailbox({ ...rt, imapSession: warm, log: memoryLogger() });
    expect(second.counts.queued).toBe(MAILS - BATCH_SIZE);
    expect(second.stoppedBecause).toBe('empty');
    expect(local.proxy.connections).toBe(connections);
    expect(warm.stats).toEqual({ opened: 1, reused: 1, discarded: 0 });
    await expectAllQueuedOnce(local.stack, settings, mailbox, MAILS);
  });

  it('a suspect drained alone has nothing fetched ahead: a cut on the FETCH of the mails behind it is not blamed on it', async () => {
    const mailbox = 'prefetch-suspect@company.test';
    const settings = settingsFor(mailbox);
    await clearTasks(local.stack);
    // The oldest mail is a genuine 5.6 MB mail (streamed, past SMALL_MAIL_BYTES), small ones behind it,
    // each past what the listing brings along (LISTED_SOURCE_BYTES): their sources need a FETCH.
    const small = Array.from({ length: 30 }, (_, i) =>
      largeMail('p@partner.test', mailbox, LISTED_SOURCE_BYTES, `behind ${i}`),
    );
    await local.stack.dropIntoMaildir(mailbox, [largeMail('big@partner.test', mailbox, 4 * 1024 * 1024), ...small]);
    const rt = runtimeFor(settings);
    // It has two failed runs behind it: one more and it is set aside, unread.
    const imap = await local.stack.imap(mailbox);
    const { uidValidity } = await imap.mailboxOpen('INBOX');
    const first = Math.min(...((await imap.search({ all: true }, { uid: true })) || []));
    await imap.logout();
    const lease = await MailboxLease.acquire(rt.storage, mailbox, 'test', 30_000);
    if (!(lease instanceof MailboxLease)) throw new Error('the lease is held');
    lease.state.suspects.set(suspectKey(BigInt(uidValidity), first), {
      runs: POISON_RUNS - 1,
      last: 'an earlier failure',
    });
    await lease.release();

    // The first FETCH of whole small sources is cut. It used to be the batch behind, fetched ahead
    // while the suspect was drained alone: the cut broke the suspect's own download, and the run's
    // failure counted against it, which set it aside at the next run.
    const before = local.proxy.injected.length;
    local.proxy.dropOn(/BODY\.PEEK\[\] /);
    const run = await drainMailbox({ ...rt, log: memoryLogger() }).catch((e: Error) => e);
    expect(run).toBeInstanceOf(ImapError);
    expect(local.proxy.injected.slice(before)).toEqual([expect.stringMatching(/^drop UID FETCH /)]);
    expect((await rt.ledger.listMessages(mailbox)).find((r) => r.uid === first)).toMatchObject({
      state: 'queued',
      removed: true,
    });

    // The next run drains the rest; the genuine mail is one task, never set aside.
    const summary = await drainMailbox({ ...rt, log: memoryLogger() });
    expect(summary.counts.quarantined).toBe(0);
    expect(await local.stack.readFolder(mailbox, 'inboxq-quarantine')).toHaveLength(0);
    await expectAllQueuedOnce(local.stack, settings, mailbox, 31);
  });
});
