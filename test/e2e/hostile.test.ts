/**
 * A corpus of hostile and broken mail. Each one becomes a task or is set aside with a reason; the
 * drain never crashes and the rest of the inbox is still drained.
 */
import { createHash, randomBytes } from 'node:crypto';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import type { TaskMessage } from '../../shared/contract/messages';
import { drainMailbox, type DrainSummary } from '../../shared/drain/drain';
import { memoryLogger } from '../../shared/telemetry/log';
import { TaskWorker } from '../../shared/worker/worker';
import { eopPass } from '../helpers/mail';
import { clearTasks, takeAllTasks } from '../helpers/stack';

const MAILBOX = 'hostile@company.test';
const AR = `Authentication-Results: ${eopPass('partner.test')}`;
const crlf = (lines: string[]) => lines.join('\r\n');
let n = 0;
const head = (extra: string[] = [], subject?: string) => [
  AR,
  'From: Sender <s@partner.test>',
  `To: ${MAILBOX}`,
  `Subject: ${subject ?? `hostile ${++n}`}`,
  `Message-ID: <hostile-${n}-${randomBytes(4).toString('hex')}@partner.test>`,
  'MIME-Version: 1.0',
  ...extra,
];
const simple = (body: string, extra: string[] = []) =>
  crlf([...head(['Content-Type: text/plain; charset=utf-8', ...extra]), '', body, '']);
const attachmentPart = (boundary: string, name: string, content: Buffer, type = 'application/octet-stream') =>
  crlf([
    `--${boundary}`,
    `Content-Type: ${type}; name="${name}"`,
    `Content-Disposition: attachment; filename="${name}"`,
    'Content-Transfer-Encoding: base64',
    '',
    content.toString('base64').replace(/(.{76})/g, '$1\r\n'),
    '',
  ]);
function multipart(parts: string, extra: string[] = [], boundary = 'b0'): string {
  return crlf([
    ...head([`Content-Type: multipart/mixed; boundary="${boundary}"`, ...extra]),
    '',
    `--${boundary}`,
    'Content-Type: text/plain',
    '',
    'see attached',
    parts,
    `--${boundary}--`,
    '',
  ]);
}

interface Case {
  name: string;
  raw: Buffer;
  /** Delivered straight into the Maildir (IMAP APPEND refuses it, or it is large). */
  maildir?: boolean;
  expect: 'queued' | 'rejected' | 'quarantined' | 'duplicate';
  check?: (task: TaskMessage, worker: TaskWorker) => void | Promise<void>;
}

const big = randomBytes(60 * 1024 * 1024);
const dupId = '<same-id@partner.test>';

const cases: Case[] = [
  { name: 'a plain mail (control)', raw: Buffer.from(simple('hello')), expect: 'queued' },
  { name: 'an empty body', raw: Buffer.from(simple('')), expect: 'queued' },
  { name: '0 bytes', raw: Buffer.alloc(0), maildir: true, expect: 'quarantined' },
  { name: 'NUL bytes in the body', raw: Buffer.from(simple('a\u0000b\u0000c')), maildir: true, expect: 'queued' },
  {
    name: 'a NUL byte in a header',
    raw: Buffer.from(simple('x', ['X-Weird: a\u0000b'])),
    maildir: true,
    expect: 'queued',
  },
  {
    name: 'more MIME parts than the parser allows (6,000)',
    raw: Buffer.from(
      multipart(Array.from({ length: 6000 }, () => '--b0\r\nContent-Type: text/plain\r\n\r\nx\r\n').join('')),
    ),
    maildir: true,
    expect: 'quarantined',
  },
  {
    name: 'multipart without a boundary',
    raw: Buffer.from(crlf([...head(['Content-Type: multipart/mixed']), '', '--x', 'hi', ''])),
    expect: 'queued',
  },
  {
    name: 'multipart without its closing boundary',
    raw: Buffer.from(
      crlf([
        ...head(['Content-Type: multipart/mixed; boundary="b"']),
        '',
        '--b',
        'Content-Type: text/plain',
        '',
        'unfinished',
        '',
      ]),
    ),
    expect: 'queued',
  },
  {
    name: 'an unknown charset',
    raw: Buffer.from(simple('hello', []).replace('charset=utf-8', 'charset=x-no-such-charset')),
    expect: 'queued',
  },
  {
    name: 'Latin-1 bytes declared as UTF-8',
    raw: Buffer.concat([
      Buffer.from(crlf([...head(['Content-Type: text/plain; charset=utf-8']), '', ''])),
      Buffer.from([0x63, 0x61, 0x66, 0xe9, 0x0d, 0x0a]),
    ]),
    expect: 'queued',
  },
  {
    name: 'UTF-7',
    raw: Buffer.from(simple('Hi Mom -+Jjo--!').replace('charset=utf-8', 'charset=utf-7')),
    expect: 'queued',
  },
  {
    name: 'invalid base64',
    raw: Buffer.from(simple('!!!!####@@@@', ['Content-Transfer-Encoding: base64'])),
    expect: 'queued',
  },
  {
    name: 'broken quoted-printable',
    raw: Buffer.from(simple('a=ZZb=\r\n=', ['Content-Transfer-Encoding: quoted-printable'])),
    expect: 'queued',
  },
  {
    name: '1,000 attachments',
    raw: Buffer.from(
      multipart(
        Array.from({ length: 1000 }, (_, i) =>
          attachmentPart('b0', `file-${i}.txt`, Buffer.from(`attachment ${i}`), 'text/plain'),
        ).join(''),
      ),
    ),
    maildir: true,
    expect: 'queued',
    check: async (task, worker) => {
      expect(task.attachments).toEqual([]);
      const list = JSON.parse((await worker.readBlob(task.attachmentsBlob!)).toString()) as { filename: string }[];
      expect(list).toHaveLength(1000);
      expect(list[999]!.filename).toBe('file-999.txt');
    },
  },
  {
    name: 'a 60 MB attachment',
    raw: Buffer.from(multipart(attachmentPart('b0', 'big.bin', big))),
    maildir: true,
    expect: 'queued',
    check: (task) => {
      expect(task.attachments[0]).toMatchObject({
        filename: 'big.bin',
        size: big.length,
        sha256: createHash('sha256').update(big).digest('hex'),
      });
    },
  },
  {
    name: 'multipart nested 100 deep',
    raw: Buffer.from(
      crlf([
        ...head(['Content-Type: multipart/mixed; boundary="n0"']),
        '',
        ...Array.from({ length: 100 }, (_, i) => `--n${i}\r\nContent-Type: multipart/mixed; boundary="n${i + 1}"\r\n`),
        '--n100',
        'Content-Type: text/plain',
        '',
        'deep',
        '',
      ]),
    ),
    expect: 'queued',
  },
  {
    name: 'a 100 KB header line',
    raw: Buffer.from(simple('x', [`X-Long: ${'a'.repeat(100 * 1024)}`])),
    maildir: true,
    expect: 'queued',
  },
  {
    name: 'a 100 KB subject',
    raw: Buffer.from(crlf([...head(['Content-Type: text/plain'], 'S'.repeat(100 * 1024)), '', 'long subject', ''])),
    maildir: true,
    expect: 'queued',
  },
  {
    name: 'message/rfc822 inside message/rfc822',
    raw: Buffer.from(
      multipart(
        crlf([
          '--b0',
          'Content-Type: message/rfc822',
          'Content-Disposition: attachment; filename="fwd.eml"',
          '',
          'From: x@y.test',
          'Subject: inner',
          'Content-Type: message/rfc822',
          '',
          'From: z@y.test',
          'Subject: innermost',
          '',
          'deepest body',
          '',
        ]),
      ),
    ),
    expect: 'queued',
  },
  {
    name: 'a filename with path traversal',
    raw: Buffer.from(multipart(attachmentPart('b0', '../../../etc/passwd', Buffer.from('root:x:0:0')))),
    expect: 'queued',
    check: (task) => {
      expect(task.attachments[0]!.filename).toBe('passwd');
      expect(task.attachments[0]!.blob.name).not.toContain('..');
    },
  },
  {
    name: 'a Windows path as filename',
    raw: Buffer.from(multipart(attachmentPart('b0', 'C:\\\\Windows\\\\evil.exe', Buffer.from('MZ')))),
    expect: 'queued',
    check: (task) => expect(task.attachments[0]!.filename).toBe('evil.exe'),
  },
  {
    name: 'an RFC 2231 filename with control characters',
    raw: Buffer.from(
      multipart(
        crlf([
          '--b0',
          'Content-Type: text/plain',
          "Content-Disposition: attachment; filename*=utf-8''%00evil%0A%0D.txt",
          '',
          'x',
          '',
        ]),
      ),
    ),
    expect: 'queued',
    // eslint-disable-next-line no-control-regex -- a file name must carry no control character
    check: (task) => expect(task.attachments[0]!.filename).not.toMatch(/[\u0000-\u001f]/),
  },
  {
    name: 'a 1,000-character filename',
    raw: Buffer.from(multipart(attachmentPart('b0', `${'n'.repeat(1000)}.txt`, Buffer.from('x')))),
    expect: 'queued',
    check: (task) => expect(task.attachments[0]!.filename.length).toBeLessThanOrEqual(120),
  },
  {
    name: 'an attachment without a filename',
    raw: Buffer.from(
      multipart(crlf(['--b0', 'Content-Type: application/pdf', 'Content-Disposition: attachment', '', 'x', ''])),
    ),
    expect: 'queued',
  },
  {
    name: 'two attachments with the same name',
    raw: Buffer.from(
      multipart(
        attachmentPart('b0', 'same.txt', Buffer.from('one')) + attachmentPart('b0', 'same.txt', Buffer.from('two')),
      ),
    ),
    expect: 'queued',
    check: (task) => {
      expect(task.attachments).toHaveLength(2);
      expect(new Set(task.attachments.map((a) => a.blob.name)).size).toBe(2);
    },
  },
  { name: 'no Content-Type', raw: Buffer.from(crlf([...head(), '', 'plain', ''])), expect: 'queued' },
  {
    name: 'header lines without a colon',
    raw: Buffer.from(crlf([...head(['this is not a header', 'neither is this']), '', 'x', ''])),
    expect: 'queued',
  },
  {
    name: 'bare LF line endings',
    raw: Buffer.from([...head(['Content-Type: text/plain']), '', 'lf only', ''].join('\n')),
    maildir: true,
    expect: 'queued',
  },
  {
    name: 'binary junk',
    raw: Buffer.concat([Buffer.from([0x00, 0xff, 0x10]), randomBytes(4096)]),
    maildir: true,
    expect: 'quarantined',
  },
  { name: 'only headers, no body', raw: Buffer.from(crlf(head(['Content-Type: text/plain']))), expect: 'queued' },
  {
    name: 'no Message-ID',
    raw: Buffer.from(simple('no id').replace(/Message-ID: [^\r\n]+\r\n/, '')),
    expect: 'queued',
  },
  {
    name: 'a 10 KB Message-ID',
    raw: Buffer.from(
      simple('long id').replace(/Message-ID: [^\r\n]+/, `Message-ID: <${'i'.repeat(10 * 1024)}@partner.test>`),
    ),
    maildir: true,
    expect: 'queued',
  },
  {
    name: 'a From with 100 addresses',
    raw: Buffer.from(
      simple('x').replace(
        'From: Sender <s@partner.test>',
        `From: ${Array.from({ length: 100 }, (_, i) => `s${i}@partner.test`).join(', ')}`,
      ),
    ),
    expect: 'rejected',
  },
  {
    name: 'HTML only',
    raw: Buffer.from(simple('<p>only <b>html</b></p>').replace('text/plain', 'text/html')),
    expect: 'queued',
    check: (task) => expect(task.body.htmlBlob).not.toBeNull(),
  },
  {
    name: 'a 200 KB text body',
    raw: Buffer.from(simple('w '.repeat(100 * 1024))),
    expect: 'queued',
    check: (task) => {
      expect(task.body.text).toBeNull();
      expect(task.body.textBlob!.size).toBeGreaterThan(200_000);
    },
  },
  {
    name: 'raw 8-bit UTF-8 in headers',
    raw: Buffer.from(simple('x').replace(/Subject: [^\r\n]+/, 'Subject: Grüße aus Köln ✓')),
    expect: 'queued',
    check: (task) => expect(task.subject).toBe('Grüße aus Köln ✓'),
  },
  { name: 'an invalid Date', raw: Buffer.from(simple('x', ['Date: yesterday at noon'])), expect: 'queued' },
  {
    name: 'an unknown transfer encoding',
    raw: Buffer.from(simple('begin 644 x\n`\nend', ['Content-Transfer-Encoding: x-uuencode'])),
    expect: 'queued',
  },
  {
    name: 'empty multipart/alternative parts',
    raw: Buffer.from(
      crlf([...head(['Content-Type: multipart/alternative; boundary="a"']), '', '--a', '--a', '--a--', '']),
    ),
    expect: 'queued',
  },
  {
    name: '10,000 References',
    raw: Buffer.from(
      simple('x', [`References: ${Array.from({ length: 10_000 }, (_, i) => `<r${i}@x.test>`).join(' ')}`]),
    ),
    maildir: true,
    expect: 'queued',
  },
  {
    name: 'a subject with 1,000 conversation tags',
    raw: Buffer.from(
      simple('x').replace(
        /Subject: [^\r\n]+/,
        `Subject: ${Array.from({ length: 1000 }, () => `[#${randomBytes(6).toString('hex')}]`).join(' ')}`,
      ),
    ),
    expect: 'queued',
    check: (task) => expect(task.conversation).toMatchObject({ isNew: true, continuedBy: null }),
  },
  {
    name: '100,000 quoted lines and nothing above them',
    raw: Buffer.from(simple('> quoted line\r\n'.repeat(100_000))),
    maildir: true,
    expect: 'queued',
    check: async (task, worker) => {
      expect(task.body.quotedText ?? (await worker.quotedText(task))).toBe('');
      expect((await worker.newText(task)).length).toBeGreaterThan(1_000_000);
    },
  },
  {
    name: 'a new text above 40,000 quoted lines',
    raw: Buffer.from(
      simple(`Here is what I think.\r\n\r\nOn Mon, Alice <a@partner.test> wrote:\r\n${'> earlier\r\n'.repeat(40_000)}`),
    ),
    maildir: true,
    expect: 'queued',
    check: async (task, worker) => {
      expect((await worker.newText(task)).trim()).toBe('Here is what I think.');
      expect((await worker.quotedText(task)).length).toBeGreaterThan(350_000);
    },
  },
  {
    name: 'a bounce',
    raw: Buffer.from(simple('Delivery failed', ['Auto-Submitted: auto-replied'])),
    expect: 'rejected',
  },
  {
    name: 'a Message-ID, first use',
    raw: Buffer.from(simple('original').replace(/Message-ID: [^\r\n]+/, `Message-ID: ${dupId}`)),
    expect: 'queued',
  },
  {
    name: 'the same Message-ID with other headers',
    raw: Buffer.from(simple('impostor', ['X-Other: yes']).replace(/Message-ID: [^\r\n]+/, `Message-ID: ${dupId}`)),
    expect: 'duplicate',
  },
];

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

  it.each(cases.filter((c) => c.check))('$name', async (c) => {
    // Mail dropped into the Maildir gets its UID later than mail appended over IMAP: find the
    // task by the case's own subject.
    const subject = /^Subject: ([^\r\n]*)/m.exec(c.raw.toString('utf8'))![1];
    const task = tasks.find((t) => t.subject === subject);
    expect(task, `a task for "${c.name}"`).toBeDefined();
    await c.check!(task!, TaskWorker.fromConnectionString(stack.azurite.connectionString));
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
