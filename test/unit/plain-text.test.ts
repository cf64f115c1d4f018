/**
 * The plain-text fast path (shared/mail/parse.ts plainTextBody) against mailparser itself: for any
 * mail it takes, its text must be the very string simpleParser gives, with no HTML and no
 * attachments; everything else must be left to mailparser. Generated mails mix the header forms
 * that decide the path (Content-Type, charset, format, transfer encoding, disposition, repeats,
 * folding, comments, line ends) with bodies of every byte that matters (CR, LF, invalid and
 * multi-byte UTF-8, NUL, boundary-like lines).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { parseBody, parseWithMailparser, plainTextBody, withoutCrBeforeLf } from '../../shared/mail/parse';

const CONTENT_TYPES = [
  null,
  'text/plain',
  'TEXT/Plain',
  'text/plain; charset=utf-8',
  'text/plain; charset="UTF-8"',
  'text/plain; charset=us-ascii',
  'text/plain; charset=utf8',
  'text/plain; charset=UTF_8',
  'text/plain (a comment); charset=utf-8',
  "text/plain; charset*=utf-8''utf-8",
  'text/plain; charset=iso-8859-1',
  'text/plain; charset=windows-1252',
  'text/plain; charset=utf-16',
  'text/plain; charset=',
  'text/plain; format=flowed',
  'text/plain; format=flowed; delsp=yes',
  'text/plain; format=fixed',
  'text/plain; name="notes.txt"',
  'text/html; charset=utf-8',
  'text/enriched',
  'multipart/mixed; boundary="b1"',
  'multipart/alternative; boundary=b1',
  'message/rfc822',
  'application/octet-stream',
  '; charset=utf-8',
  'text/plain;\r\n charset=utf-8',
] as const;

const ENCODINGS = [
  null,
  '7bit',
  '8BIT',
  'binary',
  '7bit (comment)',
  'base64',
  'quoted-printable',
  'Quoted-Printable',
  'quoted-printable (comment)',
  '"base64"',
  'x-uuencode',
  '',
] as const;
const DISPOSITIONS = [
  null,
  'inline',
  'INLINE',
  'attachment',
  'inline; filename=a.txt',
  'attachment; filename=a.txt',
  'fancy',
] as const;

const BODY_PIECES = [
  'Hello',
  ' world ',
  '\r\n',
  '\n',
  '\r',
  '\r\r\n',
  '\n\r',
  'é',
  '日本語',
  '😀',
  '\u0000',
  '--b1',
  '--b1--',
  '=3D',
  'From: someone@example.com',
  '> quoted',
  'x'.repeat(70),
  'a\r\n'.repeat(30),
  // quoted-printable: escapes, soft line breaks, bad escapes, trailing whitespace
  '=',
  '=3D',
  '=C3=A9',
  '=e2=82=ac',
  '=\r\n',
  '=\n',
  '=ZZ',
  '=4',
  '=20',
  '=0D=0A',
  '=0D',
  '=0A',
  '  \t',
  ' \r\n',
  '\t\n',
] as const;
const BAD_BYTES = [[0xff], [0xc3], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf0, 0x9f], [0x80]];

const bodyArb = fc
  .array(
    fc.oneof(
      { weight: 5, arbitrary: fc.constantFrom(...BODY_PIECES).map((s) => Buffer.from(s, 'utf8')) },
      { weight: 1, arbitrary: fc.constantFrom(...BAD_BYTES).map((b) => Buffer.from(b)) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 12 }).map((b) => Buffer.from(b)) },
    ),
    { maxLength: 40 },
  )
  .map((parts) => Buffer.concat(parts));

interface MailShape {
  contentType: string | null;
  second: string | null;
  encoding: string | null;
  disposition: string | null;
  eol: '\r\n' | '\n';
  separator: '\r\n' | '\n';
  body: Buffer;
}

const mailArb: fc.Arbitrary<MailShape> = fc.record({
  contentType: fc.constantFrom(...CONTENT_TYPES),
  second: fc.constantFrom(null, 'text/html', 'text/plain; charset=iso-8859-1'),
  encoding: fc.constantFrom(...ENCODINGS),
  disposition: fc.constantFrom(...DISPOSITIONS),
  eol: fc.constantFrom('\r\n' as const, '\n' as const),
  separator: fc.constantFrom('\r\n' as const, '\n' as const),
  body: bodyArb,
});

function build(m: MailShape): Buffer {
  const lines = ['From: Alice <alice@partner.example>', 'To: agent@company.example', 'Subject: a test'];
  if (m.contentType !== null) lines.push(`Content-Type: ${m.contentType}`);
  if (m.second !== null) lines.push(`Content-Type: ${m.second}`);
  if (m.encoding !== null) lines.push(`Content-Transfer-Encoding: ${m.encoding}`);
  if (m.disposition !== null) lines.push(`Content-Disposition: ${m.disposition}`);
  lines.push('Message-ID: <a@partner.example>');
  const head = lines.map((l) => `${l.replaceAll('\r\n', m.eol)}${m.eol}`).join('');
  return Buffer.concat([Buffer.from(head + m.separator), m.body]);
}

/** A mail with CRLF line ends and these header fields (null: none). */
const crlfMail = (contentType: string | null, encoding: string | null, disposition: string | null, body: string) =>
  build({ contentType, second: null, encoding, disposition, eol: '\r\n', separator: '\r\n', body: Buffer.from(body) });

/** The fast path's answer, and mailparser's, for one mail. */
async function both(source: Buffer) {
  const fast = plainTextBody(source);
  const slow = await parseWithMailparser(source);
  return { fast, slow };
}

describe('the plain-text fast path', () => {
  it('gives the text mailparser gives, for every generated mail it takes, and leaves the others to mailparser', async () => {
    let taken = 0;
    let left = 0;
    await fc.assert(
      fc.asyncProperty(mailArb, async (shape) => {
        const { fast, slow } = await both(build(shape));
        if (fast === null) {
          left++;
          return;
        }
        taken++;
        expect(fast.text).toBe(slow.text);
        expect(slow.html).toBeNull();
        expect(slow.attachments).toHaveLength(0);
        if (fast.textBytes) expect(fast.textBytes.equals(Buffer.from(fast.text, 'utf8'))).toBe(true);
      }),
      { numRuns: 800 },
    );
    // Both paths were exercised, many times each (the property says nothing otherwise).
    expect(taken).toBeGreaterThan(100);
    expect(left).toBeGreaterThan(100);
  });

  it.each([
    ['no Content-Type at all', null, null, null],
    ['text/plain', 'text/plain', null, null],
    ['upper case, quoted charset', 'TEXT/Plain; charset="UTF-8"', null, null],
    ['us-ascii, 7bit', 'text/plain; charset=us-ascii', '7bit', null],
    ['8bit, inline', 'text/plain; charset=utf-8', '8bit', 'inline'],
    ['a comment in the type', 'text/plain (a comment); charset=utf-8', 'binary', null],
    ['quoted-printable', 'text/plain; charset=utf-8', 'quoted-printable', null],
  ])('takes %s', async (_name, contentType, encoding, disposition) => {
    const source = crlfMail(contentType, encoding, disposition, 'Hello,\r\n\r\nthe report is late.\r\n> quoted\r\n');
    const { fast, slow } = await both(source);
    expect(fast).not.toBeNull();
    expect(fast!.text).toBe('Hello,\n\nthe report is late.\n> quoted\n');
    expect(fast!.text).toBe(slow.text);
  });

  it.each([
    ['latin-1', 'text/plain; charset=iso-8859-1', null, null],
    ['format=flowed', 'text/plain; format=flowed', null, null],
    ['base64', 'text/plain; charset=utf-8', 'base64', null],
    ['quoted-printable written in quotes (not decoded by mailsplit)', 'text/plain', '"quoted-printable"', null],
    ['an attachment', 'text/plain', null, 'attachment; filename=a.txt'],
    ['an unknown disposition', 'text/plain', null, 'fancy'],
    ['HTML', 'text/html; charset=utf-8', null, null],
    ['multipart', 'multipart/mixed; boundary="b1"', null, null],
    ['an embedded message', 'message/rfc822', null, null],
  ])('leaves %s to mailparser', (_name, contentType, encoding, disposition) => {
    expect(plainTextBody(crlfMail(contentType, encoding, disposition, 'SGVsbG8=\r\n'))).toBeNull();
  });

  it('ends the header where mailsplit does: a lone CRLF after an LF line, not only CRLF CRLF', async () => {
    const source = Buffer.from('From: a@partner.example\nSubject: x\n\r\nBody: not a header\r\ntext\r\n');
    const { fast, slow } = await both(source);
    expect(fast!.text).toBe('Body: not a header\ntext\n');
    expect(fast!.text).toBe(slow.text);
  });

  it('leaves a mail without an empty line, or with a header section over its bound, to mailparser', () => {
    expect(plainTextBody(Buffer.from('From: a@partner.example\r\nSubject: x\r\n'))).toBeNull();
    const long = `X-Long: ${'a'.repeat(20_000)}\r\n`;
    expect(plainTextBody(Buffer.from(`From: a@partner.example\r\n${long}\r\nbody\r\n`))).toBeNull();
  });

  it('decodes quoted-printable as mailparser does: escapes, soft line breaks, whitespace before a line end', async () => {
    const body = 'Caf=C3=A9 au lait =3D 2 =E2=82=AC,  \r\nsoft=\r\nbreak, bad =ZZ escape=0D=0A=\r\n';
    const { fast, slow } = await both(crlfMail('text/plain; charset=utf-8', 'quoted-printable', null, body));
    expect(fast!.text).toBe('Café au lait = 2 €,\nsoftbreak, bad =ZZ escape\n');
    expect(fast!.text).toBe(slow.text);
  });

  it('keeps invalid UTF-8 as mailparser does (replacement characters), and gives no bytes for it', async () => {
    const source = Buffer.concat([
      Buffer.from('From: a@partner.example\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nbad '),
      Buffer.from([0xe2, 0x0d, 0x0a, 0x82, 0xff]),
      Buffer.from(' end\r\n'),
    ]);
    const { fast, slow } = await both(source);
    expect(fast!.text).toBe(slow.text);
    expect(fast!.text).toBe('bad \uFFFD\n\uFFFD\uFFFD end\n');
    expect(fast!.textBytes).toBeUndefined();
  });

  it('is what parseBody answers for a plain mail, and parseBody still parses the rest with mailparser', async () => {
    const plain = Buffer.from('From: a@partner.example\r\nSubject: x\r\n\r\nHi\r\n');
    expect(await parseBody(plain)).toEqual({
      text: 'Hi\n',
      textBytes: Buffer.from('Hi\n'),
      html: null,
      attachments: [],
    });
    const html = Buffer.from('From: a@partner.example\r\nContent-Type: text/html\r\n\r\n<p>Hi</p>\r\n');
    const parsed = await parseBody(html);
    expect(parsed.html).toContain('<p>Hi</p>');
    expect(parsed.text).toBe('Hi');
  });
});

describe('withoutCrBeforeLf', () => {
  /** The reference: the same bytes as latin-1 text (one character per byte), CRLF replaced. */
  const reference = (b: Buffer) => Buffer.from(b.toString('latin1').replaceAll('\r\n', '\n'), 'latin1');

  it('drops exactly the CR of each CR LF, on short and long segments alike', () => {
    const piece = fc.oneof(
      fc.constantFrom('\r', '\n', '\r\n', '\r\r\n', 'x', 'y'.repeat(63), 'z'.repeat(64), 'w'.repeat(200)),
      fc.uint8Array({ maxLength: 8 }).map((b) => Buffer.from(b).toString('latin1')),
    );
    fc.assert(
      fc.property(fc.array(piece, { maxLength: 60 }), (pieces) => {
        const bytes = Buffer.from(pieces.join(''), 'latin1');
        expect(withoutCrBeforeLf(bytes).equals(reference(bytes))).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it('returns the same buffer when there is no CR LF, without copying', () => {
    const bytes = Buffer.from('\na\rb\n\nc\r');
    expect(withoutCrBeforeLf(bytes)).toBe(bytes);
  });
});
