/**
 * A corpus of hostile and broken mail. Each one becomes a task or is set aside with a reason; the
 * drain never crashes and the rest of the inbox is still drained.
 */
import { createHash } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { hostileCorpus } from '../../localstack/hostile-corpus';
import { runtimeFor } from '../../localstack/runtime';
import type { TaskMessage } from '../../shared/contract/messages';
import { drainMailbox, type DrainSummary } from '../../shared/drain/drain';
import { memoryLogger } from '../../shared/telemetry/log';
import { TaskWorker } from '../../shared/worker/worker';
import { clearTasks, takeAllTasks } from '../helpers/stack';

const MAILBOX = 'hostile@company.test';
const { cases, big } = hostileCorpus(MAILBOX);

const checks: Record<string, (task: TaskMessage, worker: TaskWorker) => void | Promise<void>> = {
  '1,000 attachments': async (task, worker) => {
    expect(task.attachments).toEqual([]);
    const list = JSON.parse((await worker.readBlob(task.attachmentsBlob!)).toString()) as { filename: string }[];
    expect(list).toHaveLength(1000);
    expect(list[999]!.filename).toBe('file-999.txt');
  },
  'a 60 MB attachment': (task) => {
    expect(task.attachments[0]).toMatchObject({
      filename: 'big.bin',
      size: big.length,
      sha256: createHash('sha256').update(big).digest('hex'),
    });
  },
  'a filename with path traversal': (task) => {
    expect(task.attachments[0]!.filename).toBe('passwd');
    expect(task.attachments[0]!.blob.name).not.toContain('..');
  },
  'a Windows path as filename': (task) => expect(task.attachments[0]!.filename).toBe('evil.exe'),
  'an RFC 2231 filename with control characters': (task) =>
    // eslint-disable-next-line no-control-regex -- a file name must carry no control character
    expect(task.attachments[0]!.filename).not.toMatch(/[\u0000-\u001f]/),
  'a 1,000-character filename': (task) => expect(task.attachments[0]!.filename.length).toBeLessThanOrEqual(120),
  'two attachments with the same name': (task) => {
    expect(task.attachments).toHaveLength(2);
    expect(new Set(task.attachments.map((a) => a.blob.name)).size).toBe(2);
  },
  'HTML only': (task) => expect(task.body.htmlBlob).not.toBeNull(),
  'a 200 KB text body': (task) => {
    expect(task.body.text).toBeNull();
    expect(task.body.textBlob!.size).toBeGreaterThan(200_000);
  },
  'raw 8-bit UTF-8 in headers': (task) => expect(task.subject).toBe('Grüße aus Köln ✓'),
  'a subject with 1,000 conversation tags': (task) =>
    expect(task.conversation).toMatchObject({ isNew: true, continuedBy: null }),
  '100,000 quoted lines and nothing above them': async (task, worker) => {
    expect(task.body.quotedText ?? (await worker.quotedText(task))).toBe('');
    expect((await worker.newText(task)).length).toBeGreaterThan(1_000_000);
  },
  'a new text above 40,000 quoted lines': async (task, worker) => {
    expect((await worker.newText(task)).trim()).toBe('Here is what I think.');
    expect((await worker.quotedText(task)).length).toBeGreaterThan(350_000);
  },
};

let stack: LocalStack;
let summary: DrainSummary;
let tasks: TaskMessage[];
beforeAll(async () => {
  stack = await LocalStack.start();
  await clearTasks(stack);
  for (const c of cases) {
    if (c.maildir) await stack.dropIntoMaildir(MAILBOX, c.raw);
    else await stack.appendMail(MAILBOX, c.raw);
  }
  const rt = runtimeFor(stack.settings(MAILBOX, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test' }));
  summary = await drainMailbox({ ...rt, log: memoryLogger() });
  tasks = await takeAllTasks(stack);
}, 300_000);
afterAll(async () => {
  await stack?.stop();
});

describe(`a hostile corpus of ${cases.length} mails`, () => {
  it('has at least 30 mails', () => expect(cases.length).toBeGreaterThanOrEqual(30));

  it('drains all of them in one run, each accounted for', async () => {
    expect(summary.stoppedBecause).toBe('empty');
    expect(summary.counts.seen).toBe(cases.length);
    expect(await stack.readFolder(MAILBOX, 'INBOX')).toHaveLength(0);
    const expected = { queued: 0, rejected: 0, quarantined: 0, duplicate: 0 };
    for (const c of cases) expected[c.expect]++;
    expect(summary.counts).toMatchObject(expected);
    for (const o of summary.outcomes.filter((x) => x.outcome !== 'queued')) expect(o.reasons.join('')).not.toBe('');
    expect(tasks).toHaveLength(expected.queued);
  });

  it.each(cases.filter((c) => checks[c.name]))('$name', async (c) => {
    // Mail dropped into the Maildir gets its UID later than mail appended over IMAP: find the
    // task by the case's own subject.
    const subject = /^Subject: ([^\r\n]*)/m.exec(c.raw.toString('utf8'))![1];
    const task = tasks.find((t) => t.subject === subject);
    expect(task, `a task for "${c.name}"`).toBeDefined();
    await checks[c.name]!(task!, TaskWorker.fromConnectionString(stack.azurite.connectionString));
  });

  it('sets aside what is not a mail, with the reason', () => {
    const quarantined = summary.outcomes.filter((o) => o.outcome === 'quarantined');
    const reasons = quarantined.map((o) => o.reasons[0]);
    expect(reasons).toHaveLength(3);
    expect(reasons).toEqual(
      expect.arrayContaining([
        expect.stringContaining('the message is empty (0 bytes)'),
        expect.stringContaining('does not start with a header section'),
        expect.stringContaining('Max allowed child nodes exceeded'),
      ]),
    );
  });
});
