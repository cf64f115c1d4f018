/**
 * A corpus of hostile and broken mail, as strangers send it: broken MIME, a 60 MB attachment, 1,000
 * attachments, 6,000 MIME parts, path traversal in file names, 100,000 quoted lines, a forged
 * duplicate of a Message-ID, … Each mail says what must become of it (a task, a rejection, set
 * aside, a duplicate). test/e2e/hostile.test.ts drains it and checks each outcome; the benchmark
 * drains it to measure the app's peak memory.
 */
import { randomBytes } from 'node:crypto';

export interface HostileMail {
  name: string;
  raw: Buffer;
  /** Delivered straight into the Maildir (IMAP APPEND refuses it, or it is large). */
  maildir?: boolean;
  expect: 'queued' | 'rejected' | 'quarantined' | 'duplicate';
}

/** An Authentication-Results header as Exchange Online Protection writes it for a mail that passed DMARC. */
function eopPass(domain: string): string {
  return `spf=pass (sender IP is 203.0.113.5) smtp.mailfrom=${domain}; dkim=pass (signature was verified) header.d=${domain};dmarc=pass action=none header.from=${domain};compauth=pass reason=100`;
}

/** The corpus for `MAILBOX`, from `*@partner.test`; `big` is the 60 MB attachment's content. */
export function hostileCorpus(MAILBOX: string): { cases: HostileMail[]; big: Buffer } {
  const big = randomBytes(60 * 1024 * 1024);
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

  const dupId = '<same-id@partner.test>';

  const cases: HostileMail[] = [
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
    },
    {
      name: 'a 60 MB attachment',
      raw: Buffer.from(multipart(attachmentPart('b0', 'big.bin', big))),
      maildir: true,
      expect: 'queued',
    },
    {
      name: 'multipart nested 100 deep',
      raw: Buffer.from(
        crlf([
          ...head(['Content-Type: multipart/mixed; boundary="n0"']),
          '',
          ...Array.from(
            { length: 100 },
            (_, i) => `--n${i}\r\nContent-Type: multipart/mixed; boundary="n${i + 1}"\r\n`,
          ),
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
    },
    {
      name: 'a Windows path as filename',
      raw: Buffer.from(multipart(attachmentPart('b0', 'C:\\\\Windows\\\\evil.exe', Buffer.from('MZ')))),
      expect: 'queued',
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
    },
    {
      name: 'a 1,000-character filename',
      raw: Buffer.from(multipart(attachmentPart('b0', `${'n'.repeat(1000)}.txt`, Buffer.from('x')))),
      expect: 'queued',
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
    },
    {
      name: 'a 200 KB text body',
      raw: Buffer.from(simple('w '.repeat(100 * 1024))),
      expect: 'queued',
    },
    {
      name: 'raw 8-bit UTF-8 in headers',
      raw: Buffer.from(simple('x').replace(/Subject: [^\r\n]+/, 'Subject: Grüße aus Köln ✓')),
      expect: 'queued',
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
    },
    {
      name: '100,000 quoted lines and nothing above them',
      raw: Buffer.from(simple('> quoted line\r\n'.repeat(100_000))),
      maildir: true,
      expect: 'queued',
    },
    {
      name: 'a new text above 40,000 quoted lines',
      raw: Buffer.from(
        simple(
          `Here is what I think.\r\n\r\nOn Mon, Alice <a@partner.test> wrote:\r\n${'> earlier\r\n'.repeat(40_000)}`,
        ),
      ),
      maildir: true,
      expect: 'queued',
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
  return { cases, big };
}
