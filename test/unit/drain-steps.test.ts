/**
 * The drain's pure pieces, without servers: identities, the bounds of a ledger row, file names and
 * content types, which failures are a mail's and which the run's, poison-mail planning, which mails
 * are acknowledged, the verdict's independence from the body, and the header parse.
 */
import { type AddressObject, simpleParser } from 'mailparser';
import { describe, expect, it } from 'vitest';

import type { SenderPolicy } from '../../shared/config/types';
import { failureReason, isRunFailure } from '../../shared/drain/mail';
import { toAcknowledge } from '../../shared/drain/steps/acknowledge';
import { claimRecord } from '../../shared/drain/steps/claim';
import { judgeOne, MAX_HEADER_BYTES } from '../../shared/drain/steps/judge';
import { queuedPatch } from '../../shared/drain/steps/queue';
import { countsAgainstMails, forgetGone, nextPlan, POISON_RUNS, suspect } from '../../shared/drain/suspects';
import { ImapError, StorageError, TokenError } from '../../shared/errors';
import {
  CONVERSATION_ID_CANDIDATES,
  conversationIdFor,
  deriveTaskId,
  mailIdentity,
  replyMessageId,
  startedBy,
  taskIdOfOwnMessageId,
} from '../../shared/identity/ids';
import { TaskIds } from '../../shared/identity/task-key';
import { LeaseLostError, suspectKey, type Suspects } from '../../shared/ledger/lease';
import { Ledger } from '../../shared/ledger/ledger';
import type { MessageRecord } from '../../shared/ledger/rows';
import { ROW_BOUNDS } from '../../shared/ledger/rows';
import { headerSection, MailParseError, normalizeMessageId, parseHeader } from '../../shared/mail/parse';
import { readThreadIndex } from '../../shared/mail/thread-index';
import { judgeMail } from '../../shared/sender/judge';
import { safeContentType, sanitizeFilename } from '../../shared/storage/blobs';
import { boundedJsonList, clip } from '../../shared/storage/bounded';
import { eopPass } from '../helpers/mail';

const MAILBOX = 'agent@company.test';
const KEY = { secret: Buffer.alloc(32, 7), createdAt: '2026-12-01T00:00:00.000Z', rowsBefore: false };
const IDS = new TaskIds(MAILBOX, KEY, 30);

describe('identities', () => {
  const taskId = IDS.of('mid:<a@b>');

  it('a received mail and a Message-ID inboxq wrote lead back to the same task', () => {
    expect(IDS.ofMessageId(' <a@b> ')).toEqual([taskId]);
    const own = replyMessageId(MAILBOX, taskId, 'r-1');
    expect(own).toBe(`<inboxq.${taskId}.r-1@company.test>`);
    expect(taskIdOfOwnMessageId(own)).toBe(taskId);
    expect(IDS.ofMessageId(own)).toEqual([taskId]);
    expect(taskIdOfOwnMessageId('<inboxq.nothex.r@x>')).toBeNull();
  });

  it('task ids are derived under the deployment key: without it no one computes them; before it, the ids of then', () => {
    const other = new TaskIds(MAILBOX, { ...KEY, secret: Buffer.alloc(32, 8) }, 30);
    expect(other.of('mid:<a@b>')).not.toBe(taskId);
    expect(taskId).not.toBe(deriveTaskId(null, MAILBOX, 'mid:<a@b>'));
    expect(taskId).toBe(deriveTaskId(KEY.secret, 'AGENT@company.test', 'mid:<a@b>'));
    // A deployment with no rows of before never looks under the old ids.
    expect(IDS.before('mid:<a@b>', Date.parse(KEY.createdAt))).toBeNull();
    // One that had some looks for as long as they may be kept (the retention and a day).
    const upgraded = new TaskIds(MAILBOX, { ...KEY, rowsBefore: true }, 30);
    const legacy = deriveTaskId(null, MAILBOX, 'mid:<a@b>');
    expect(upgraded.before('mid:<a@b>', Date.parse(KEY.createdAt) + 30 * 86_400_000)).toBe(legacy);
    expect(upgraded.before('mid:<a@b>', Date.parse(KEY.createdAt) + 31 * 86_400_000 + 1)).toBeNull();
    expect(upgraded.ofMessageId('<a@b>', Date.parse(KEY.createdAt))).toEqual([taskId, legacy]);
    expect(new TaskIds(MAILBOX, { ...KEY, rowsBefore: true }, 0).before('mid:<a@b>', 8.64e15)).toBe(legacy);
    // The CLI before any drain made a key: the ids of then.
    expect(new TaskIds(MAILBOX, null, 30).of('mid:<a@b>')).toBe(legacy);
  });

  it('only an accepted mail with a Message-ID is claimed under it', () => {
    expect(mailIdentity(true, '<a@b>', 'h')).toBe('mid:<a@b>');
    expect(mailIdentity(false, '<a@b>', 'h')).toBe('sha256:h');
    expect(mailIdentity(true, null, 'h')).toBe('sha256:h');
  });

  it('conversation ids are 96 bits, a fixed chain of distinct candidates per task', () => {
    const chain = Array.from({ length: CONVERSATION_ID_CANDIDATES }, (_, c) => conversationIdFor(taskId, c));
    expect(chain.every((id) => /^[0-9a-f]{24}$/.test(id))).toBe(true);
    expect(new Set(chain).size).toBe(CONVERSATION_ID_CANDIDATES);
    expect(chain[0]).toBe(taskId.slice(0, 24));
    expect(chain.every((id) => startedBy(id, taskId))).toBe(true);
    expect(startedBy(conversationIdFor(IDS.of('mid:<other@b>')), taskId)).toBe(false);
  });

  it('a Message-ID longer than a header line is no Message-ID', () => {
    expect(normalizeMessageId(`<${'x'.repeat(996)}>`)).toHaveLength(998);
    expect(normalizeMessageId(`<${'x'.repeat(997)}>`)).toBeNull();
    expect(normalizeMessageId('a@b')).toBe('<a@b>');
  });
});

describe('bounded row values', () => {
  it('clip never ends inside a surrogate pair and returns well-formed text', () => {
    const s = `ab${'\u{1F600}'.repeat(3)}`;
    expect(clip(s, 3)).toBe('ab');
    expect(clip(s, 4)).toBe('ab\u{1F600}');
    expect(clip('a\uD800b', 10)).toBe('a\uFFFDb');
  });

  it('a list is bounded by the length of its JSON, escapes included', () => {
    const quotes = Array.from({ length: 20 }, () => '"'.repeat(990));
    const json = boundedJsonList(quotes, 16_000, 1000, 'last');
    expect(json.length).toBeLessThanOrEqual(16_000);
    expect(JSON.parse(json)).toEqual(quotes.slice(-8));
    const controls = boundedJsonList(
      Array.from({ length: 30 }, () => '\u0001'.repeat(990)),
      16_000,
      1000,
      'first',
    );
    expect(controls.length).toBeLessThanOrEqual(16_000);
    expect(JSON.parse(controls)).toHaveLength(2);
  });

  it('every property of a claimed row stays within a table property, whatever the mail holds', async () => {
    const huge = 'x'.repeat(100_000);
    const mail = judgeOne(
      {
        entry: { uid: 1, size: 10, internalDate: undefined },
        header: Buffer.from(
          `From: a@b.c\r\nSubject: ${'"'.repeat(40_000)}\r\nReferences: ${Array.from({ length: 50 }, () => `<${'"'.repeat(990)}@x>`).join(' ')}\r\n\r\n`,
        ),
        headerSha256: 'h',
        source: undefined,
      },
      IDS,
      policy,
    );
    const record: MessageRecord = {
      ...claimRecord(mail, MAILBOX, 1n, new Date().toISOString()),
      sender: huge,
      reasons: [huge, huge, huge],
      identity: `mid:${huge}`,
    };
    const writes: Record<string, unknown>[] = [];
    const table = { createEntity: (e: Record<string, unknown>) => Promise.resolve((writes.push(e), { etag: '1' })) };
    await new Ledger({ table: () => Promise.resolve(table) } as never).claimMessage(record);
    const entity = writes[0]!;
    for (const [k, v] of Object.entries(entity))
      if (typeof v === 'string') expect(v.length, k).toBeLessThanOrEqual(16_000);
    expect(JSON.stringify(entity).length).toBeLessThan(64_000);
    expect((entity['subject'] as string).length).toBe(ROW_BOUNDS.subject);
  });
});

const policy: SenderPolicy = {
  authorizedSenders: ['*@partner.test'],
  trustedAuthservId: '',
  microsoftInternalFallback: true,
};

describe('the verdict reads the header section only', () => {
  it('a body nobody could parse does not change the verdict or its cost', () => {
    const header = `Authentication-Results: ${eopPass('partner.test')}\r\nFrom: a@partner.test\r\nMessage-ID: <m@partner.test>\r\n\r\n`;
    const body = Buffer.alloc(5 * 1024 * 1024, 0x3c);
    const whole = Buffer.concat([Buffer.from(header), body]);
    const judged = judgeOne(
      {
        entry: { uid: 1, size: whole.length, internalDate: undefined },
        header: headerSection(whole),
        headerSha256: 'h',
        source: whole,
      },
      IDS,
      policy,
    );
    expect(judged.accepted).toBe(true);
    expect(judged.identity).toBe('mid:<m@partner.test>');
    // The whole mail handed to the judge (as check-sender does): only its header section is read.
    const direct = judgeMail(whole, policy);
    expect(direct).toMatchObject({ kind: 'mail', verdict: { verdict: 'accept' } });
  });

  it('a header section over the bound is malformed, never parsed', () => {
    const header = Buffer.from(`From: a@partner.test\r\nX: ${'y'.repeat(MAX_HEADER_BYTES)}\r\n\r\n`);
    const judged = judgeOne(
      { entry: { uid: 1, size: header.length, internalDate: undefined }, header, headerSha256: 'h', source: header },
      IDS,
      policy,
    );
    expect(judged.judged).toMatchObject({ kind: 'malformed' });
    expect(judged.identity).toBe('sha256:h');
  });
});

describe('file names and content types', () => {
  it.each([
    ['emoji cut by code point, extension kept', `${'\u{1F600}'.repeat(200)}.pdf`, `${'\u{1F600}'.repeat(116)}.pdf`],
    ['a lone surrogate becomes U+FFFD', 'a\uD800b.txt', 'a\uFFFDb.txt'],
    ['bidi overrides are removed', 'invoice\u202Efdp.exe', 'invoicefdp.exe'],
    ['bidi isolates and marks are removed', '\u2066a\u2069\u200Fb.txt', 'ab.txt'],
    ['zero-width characters are removed', 'a\u200Bb\uFEFF.txt', 'ab.txt'],
    ['only invisible characters: the fallback', '\u200B\u200C\u200D', 'attachment-1'],
    ['C1 controls become _', 'a\u0085b.txt', 'a_b.txt'],
    ['Windows device names get a prefix', 'con.txt', '_con.txt'],
    ['Windows device names without extension', 'LPT1', '_LPT1'],
    ['a device-like name is left alone', 'console.txt', 'console.txt'],
    ['trailing dots and spaces go', 'report.pdf. . ', 'report.pdf'],
    ['a long name without extension', 'n'.repeat(300), 'n'.repeat(120)],
  ])('%s', (_why, name, expected) => {
    const out = sanitizeFilename(name, 'attachment-1');
    expect(out).toBe(expected);
    expect(out.isWellFormed()).toBe(true);
    expect(Array.from(out).length).toBeLessThanOrEqual(120);
    expect(() => encodeURIComponent(out)).not.toThrow();
  });

  it.each([
    ['application/pdf', 'application/pdf'],
    ['Text/Plain; charset="UTF-8"; format=flowed', 'text/plain; charset=UTF-8'],
    ['text/plain; name="\u00e9"', 'text/plain'],
    ['application/pd\u0192', 'application/octet-stream'],
    ['no-slash', 'application/octet-stream'],
    ['', 'application/octet-stream'],
    [`application/x-${'y'.repeat(2000)}`, 'application/octet-stream'],
    ['text/plain; charset=\u00ff', 'text/plain'],
  ])('content type %j -> %j', (value, expected) => expect(safeContentType(value)).toBe(expected));
});

describe('whose failure it is', () => {
  const refused = new StorageError('x', { status: 400 });
  const down = new StorageError('x', { status: 503 });
  const offline = new StorageError('x', { cause: Object.assign(new Error('connect'), { code: 'ECONNREFUSED' }) });
  const invalidChar = new StorageError('x', {
    cause: Object.assign(new TypeError('Invalid character in header content'), { code: 'ERR_INVALID_CHAR' }),
  });

  it.each([
    ['a request Storage refused for what it carried', refused, false, true],
    ['a header the SDK refused to send', invalidChar, false, true],
    ['Storage unavailable', down, true, false],
    ['Storage unreachable', offline, true, false],
    ['IMAP', new ImapError('x', 'unreachable'), true, true],
    ['IMAP throttling', new ImapError('x', 'throttled'), true, false],
    ['the credential', new TokenError('x', undefined), true, false],
    ['a lost lease', new LeaseLostError('x'), true, false],
    ['a parser refusal', new MailParseError('x'), false, true],
    ['a bug tickled by a mail', new URIError('URI malformed'), false, true],
  ])("%s: ends the run %s, counts against the batch's mails %s", (_name, err, run, counts) => {
    expect(isRunFailure(err)).toBe(run);
    expect(countsAgainstMails(err)).toBe(counts);
  });

  it("a reason never quotes the message of an error that is not inboxq's or the parser's", () => {
    expect(failureReason('step', new SyntaxError('Unexpected token in "secret text"'))).toBe(
      'step failed for this mail alone (SyntaxError)',
    );
    expect(failureReason('step', new MailParseError('Max allowed child nodes exceeded'))).toContain(
      'Max allowed child nodes exceeded',
    );
  });
});

describe('poison-mail planning', () => {
  const mails = [1, 2, 3, 4, 5].map((uid) => ({ uid, size: 100, internalDate: undefined }));

  it('drains a batch up to the next suspect, a suspect alone, and sets aside one of POISON_RUNS runs', () => {
    const suspects: Suspects = new Map();
    suspect(suspects, 7n, [3], 'TypeError');
    expect(nextPlan(mails, 0, 100, suspects, 7n)).toEqual({ kind: 'batch', entries: mails.slice(0, 2) });
    expect(nextPlan(mails, 2, 100, suspects, 7n)).toEqual({ kind: 'batch', entries: [mails[2]] });
    for (let i = 1; i < POISON_RUNS; i++) suspect(suspects, 7n, [3], 'TypeError');
    expect(nextPlan(mails, 2, 100, suspects, 7n)).toMatchObject({
      kind: 'poison',
      entry: mails[2],
      suspect: { runs: POISON_RUNS },
    });
    expect(nextPlan(mails, 3, 100, suspects, 7n)).toEqual({ kind: 'batch', entries: mails.slice(3) });
    // Another UIDVALIDITY numbers other mails: its suspects count for nothing here.
    expect(nextPlan(mails, 2, 100, suspects, 8n)).toEqual({ kind: 'batch', entries: mails.slice(2) });
  });

  it('forgets suspects that left INBOX or belong to another numbering', () => {
    const suspects: Suspects = new Map([
      [suspectKey(7n, 1), { runs: 1, last: '' }],
      [suspectKey(7n, 2), { runs: 1, last: '' }],
      [suspectKey(6n, 1), { runs: 1, last: '' }],
    ]);
    forgetGone(suspects, 7n, new Set([2]));
    expect([...suspects.keys()]).toEqual(['7:2']);
  });
});

describe('acknowledgements', () => {
  const row = (taskId: string, patch: Partial<MessageRecord>): MessageRecord =>
    ({ taskId, state: 'queued', removed: false, conversationId: conversationIdFor(taskId), ...patch }) as MessageRecord;
  const a = IDS.of('mid:<a>');
  const b = IDS.of('mid:<b>');

  it('go to the first mail of each new conversation, once, including one that took the next id of its chain', () => {
    expect(
      toAcknowledge([
        row(a, {}),
        row(a, {}),
        row(b, { conversationId: conversationIdFor(b, 1) }),
        row(IDS.of('mid:<c>'), { conversationId: conversationIdFor(a) }),
        row(IDS.of('mid:<d>'), { state: 'rejected' }),
        row(IDS.of('mid:<e>'), { removed: true }),
      ]),
    ).toEqual([a, b]);
  });
});

describe('the row of a queued mail', () => {
  it('says who sent it, why it was accepted, and why it did not join the conversation it pointed at', () => {
    const mail = {
      judged: { kind: 'mail', verdict: { sender: 'a@partner.test', reasons: ['DMARC pass'] } },
      conversation: { refusedConversationId: 'c'.repeat(24) },
    } as unknown as Parameters<typeof queuedPatch>[0];
    const task = { conversation: { id: 'd'.repeat(24) } } as unknown as Parameters<typeof queuedPatch>[1];
    expect(queuedPatch(mail, task)).toEqual({
      state: 'queued',
      sender: 'a@partner.test',
      reasons: [
        'DMARC pass',
        `it points at conversation ${'c'.repeat(24)} of other participants, so it started conversation ${'d'.repeat(24)}`,
      ],
      conversationId: 'd'.repeat(24),
      queuedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) as unknown,
    });
  });
});

describe('the header parse', () => {
  // parseHeader runs mailparser's header decoding without its parsing stream (shared/mail/parse.ts);
  // it must read a header section exactly as simpleParser does, whatever mailparser version is installed.
  async function viaSimpleParser(source: Buffer) {
    const parsed = await simpleParser(headerSection(source));
    const refs =
      parsed.references === undefined ? [] : Array.isArray(parsed.references) ? parsed.references : [parsed.references];
    const addresses = (v: AddressObject | AddressObject[] | undefined) =>
      !v ? [] : (Array.isArray(v) ? v : [v]).flatMap((a) => a.value.map((x) => x.address ?? '').filter(Boolean));
    return {
      headerLines: parsed.headerLines.map((h) => ({ key: h.key.toLowerCase(), line: h.line })),
      messageId: normalizeMessageId(parsed.messageId),
      inReplyTo: normalizeMessageId(parsed.inReplyTo),
      references: refs.map((r) => normalizeMessageId(r)).filter((r): r is string => r !== null),
      threadIndex: (() => {
        const value: unknown = parsed.headers.get('thread-index');
        const first: unknown = Array.isArray(value) ? value[0] : value;
        return readThreadIndex(typeof first === 'string' ? first : undefined)?.toString('base64') ?? null;
      })(),
      subject: parsed.subject ?? '',
      fromName: parsed.from?.value[0]?.name ?? '',
      to: addresses(parsed.to),
      cc: addresses(parsed.cc),
      date: parsed.date,
    };
  }

  it.each([
    'From: "Alice A." <a@p.test>\r\nTo: x@y.test, "Bob" <b@y.test>\r\nCc: c@y.test\r\nSubject: =?utf-8?B?R3LDvMOfZQ==?= und =?iso-8859-1?Q?K=F6ln?=\r\nMessage-ID: <m1@p.test>\r\nIn-Reply-To: <r@p.test>\r\nReferences: <a@x> <b@x>\r\n <c@x>\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\nbody',
    'From: a@p.test\r\nFrom: b@p.test\r\nSubject: two\r\n\tfolded\r\n\r\n',
    'From: =?utf-8?Q?Ren=C3=A9?= <r@p.test>\r\nSubject: Grüße ✓\r\nMessage-ID: m2@p.test\r\n\r\n',
    'From: a@p.test\nSubject: lf only\nReferences: <x@y>\n\nbody',
    'X-Weird: a\u0000b\r\nFrom: a@p.test\r\n\r\n',
    'this is not a header\r\nFrom: a@p.test\r\nSubject: s\r\n\r\n',
    `From: a@p.test\r\nMessage-ID: <${'m'.repeat(2000)}@x>\r\nReferences: ${Array.from({ length: 50 }, (_, i) => `<r${i}@x>`).join(' ')}\r\n\r\n`,
    'From: group: a@p.test, b@p.test;\r\nTo: undisclosed-recipients:;\r\n\r\n',
    'From: a@p.test\r\nThread-Index: AQHcXydIABEiM0RVZneImaq7zN3u/w==\r\nThread-Topic: t\r\n\r\n',
    'From: a@p.test\r\nThread-Index: AQHcXydIABEiM0RVZneImaq7\r\n zN3u/wAAEjRW\r\nThread-Index: AQ==\r\n\r\n',
    'From: a@p.test\r\nThread-Index: not base64!\r\n\r\n',
  ])('reads %j as simpleParser does', async (raw) => {
    const source = Buffer.from(raw, 'utf8');
    expect(parseHeader(source)).toEqual(await viaSimpleParser(source));
  });

  it('keeps a valid Thread-Index (folded or not, the first of several) as base64, and none that is not one', () => {
    const read = (raw: string) => parseHeader(Buffer.from(`From: a@p.test\r\n${raw}\r\n\r\n`)).threadIndex;
    expect(read('Thread-Index: AQHcXydIABEiM0RVZneImaq7zN3u/w==')).toBe('AQHcXydIABEiM0RVZneImaq7zN3u/w==');
    expect(read('Thread-Index: AQHcXydIABEiM0RVZneImaq7\r\n zN3u/wAAEjRW\r\nThread-Index: AQ==')).toBe(
      'AQHcXydIABEiM0RVZneImaq7zN3u/wAAEjRW',
    );
    expect(read('Thread-Index: not base64!')).toBeNull();
    expect(read('Thread-Index: AQ==')).toBeNull();
    expect(read('Subject: none')).toBeNull();
  });
});
