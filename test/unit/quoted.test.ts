import { describe, expect, it } from 'vitest';

import { subjectTags, withSubjectTag } from '../../shared/conversation/conversations';
import { outlookBareAddress, PROBE_CHARS, PROBE_LINE_CHARS, splitQuoted } from '../../shared/mail/quoted';

describe('quoted history', () => {
  it.each([
    [
      'Outlook, with a display name',
      'Book Munich instead.\n\nAlice\n\nFrom: Agent <agent@company.com>\nSent: Monday, November 23, 2026 10:00 AM\nTo: Alice <alice@partner.example>\nSubject: Re: Trip\n\nBooked Berlin.\n',
      'Book Munich instead.\n\nAlice\n',
      /^From: Agent <agent@company.com>\nSent: Monday[\s\S]*Booked Berlin\.$/,
    ],
    [
      'Outlook, a bare address',
      'Yes please.\r\n\r\nFrom: agent@company.com\r\nSent: Monday, November 23, 2026 10:00 AM\r\nTo: alice@partner.example\r\nSubject: Re: Trip\r\n\r\nShall I book?\r\n',
      'Yes please.\n',
      /^From: agent@company.com\nSent: Monday[\s\S]*Shall I book\?$/,
    ],
    [
      'Gmail / Apple Mail',
      'Sure.\n\nOn Mon, Nov 23, 2026 at 10:00 AM Agent <agent@company.com> wrote:\n> Shall I book?\n> Regards\n',
      'Sure.\n',
      /^On Mon, Nov 23, 2026 at 10:00 AM Agent <agent@company.com> wrote:\n> Shall I book\?\n> Regards$/,
    ],
    [
      'German Outlook',
      'Ja.\n\nVon: Agent <agent@company.com>\nGesendet: Montag, 23. November 2026 10:00\nAn: Alice\nBetreff: Reise\n\nBuchen?\n',
      'Ja.\n',
      /^Von: Agent/,
    ],
  ])('%s: the new text above, the history apart', (_name, text, newText, quoted) => {
    const split = splitQuoted(text);
    expect(split.newText).toBe(newText);
    expect(split.quotedText).toMatch(quoted);
  });

  it.each([
    ['no history', 'Just a question: where is the report?\n'],
    ['a signature only', 'See you.\n\n-- \nAlice\n'],
    ['only quoted lines (nothing new above them): kept whole', '> Shall I book?\n> Regards\n'],
    ['empty', ''],
    ['blank: spaces, tabs, line ends, no-break spaces, a byte-order mark', ' \t\r\n\u00a0\ufeff\u2028\u3000\n'],
  ])('%s: everything is new text', (_name, text) => {
    expect(splitQuoted(text)).toEqual({ newText: text, quotedText: '' });
  });

  it('looks at blank text as trim() does: what trim() keeps is content, whatever precedes it', () => {
    const quoteAfterBlank = `${' \u00a0\n'.repeat(3)}Yes.\n\nOn Mon, Alice <a@b.c> wrote:\n> Shall I?\n`;
    expect(splitQuoted(quoteAfterBlank).quotedText).toBe('On Mon, Alice <a@b.c> wrote:\n> Shall I?');
  });

  it('finds a quote in the probe and takes everything after the probe as quoted history', () => {
    const tail = '> older\n'.repeat(PROBE_CHARS / 4);
    const text = `Hi\n\nOn Mon, Alice <a@b.c> wrote:\n> x\n${tail}`;
    const split = splitQuoted(text);
    expect(split.newText).toBe('Hi\n');
    expect(split.quotedText.startsWith('On Mon, Alice <a@b.c> wrote:\n> x\n> older')).toBe(true);
    expect(split.quotedText.length).toBeGreaterThan(tail.length);
  });

  it('reads a long CRLF text the same as its LF form: the quote in the probe, the rest quoted, LF throughout', () => {
    const tail = '> older line of the history\n'.repeat(PROBE_CHARS);
    const lf = `Hi\n\nOn Mon, Alice <a@b.c> wrote:\n> x\n${tail}`;
    const crlf = lf.replace(/\n/g, '\r\n');
    expect(crlf.length).toBeGreaterThan(2 * PROBE_CHARS + 2);
    expect(splitQuoted(crlf)).toEqual(splitQuoted(lf));
    expect(splitQuoted(crlf).quotedText.endsWith('> older line of the history')).toBe(true);
  });

  it.each([2 * PROBE_CHARS - 40, 2 * PROBE_CHARS + 2, 2 * PROBE_CHARS + 3, 4 * PROBE_CHARS])(
    'a CRLF text of about %i characters with a quote at the end of the probe splits where its LF form does',
    (size) => {
      const head = 'w\n'.repeat(Math.floor((PROBE_CHARS - 60) / 2));
      const lf = `${head}Hello\n\nOn Mon, Alice <a@b.c> wrote:\n> x\n${'> y\n'.repeat(Math.max(0, (size - head.length * 2) / 8))}`;
      const crlf = lf.replace(/\n/g, '\r\n');
      expect(splitQuoted(crlf)).toEqual(splitQuoted(lf));
    },
  );

  it('gives a long text with no quote back as it is (the same string, not a copy)', () => {
    const text = 'words words words\r\n'.repeat(PROBE_CHARS);
    expect(splitQuoted(text).newText).toBe(text);
    expect(splitQuoted(text).quotedText).toBe('');
  });

  it('looks for no quote past the probe: a text whose first quote is beyond it is all new', () => {
    const text = `${'words words words\n'.repeat(PROBE_CHARS / 10)}On Mon, Alice <a@b.c> wrote:\n> x\n`;
    expect(splitQuoted(text)).toEqual({ newText: text, quotedText: '' });
  });

  it('keeps long lines of the new text and the quote whole (the parser sees markers for them)', () => {
    const paragraph = 'A long paragraph without a break. '.repeat(40);
    const quotedLong = `> ${'quoted long line '.repeat(30)}`;
    const split = splitQuoted(`${paragraph}\n\nOn Mon, Alice <a@b.c> wrote:\n${quotedLong}\n`);
    expect(paragraph.length).toBeGreaterThan(PROBE_LINE_CHARS);
    expect(split.newText).toBe(`${paragraph}\n`);
    expect(split.quotedText).toBe(`On Mon, Alice <a@b.c> wrote:\n${quotedLong}`);
  });

  it("does not split a text holding the markers' private-use characters", () => {
    const text = `Hi \uE0000\uE001\n\nOn Mon, Alice <a@b.c> wrote:\n> x\n`;
    expect(splitQuoted(text)).toEqual({ newText: text, quotedText: '' });
  });

  it.each([
    ['From: agent@company.com', 'Sent: Monday', 'agent@company.com'],
    ['Von : a@b.c', 'Gesendet: x', 'a@b.c'],
    ['From: Agent <agent@company.com>', 'Sent: Monday', null],
    ['From: agent@company.com', 'Subject: x', null],
    ['From: @@@@', 'Sent: x', null],
    [`From: ${'@'.repeat(1000)}`, 'Sent: x', null],
  ])('Outlook bare-address header %j / %j -> %j', (line, next, expected) =>
    expect(outlookBareAddress(line, next)).toBe(expected),
  );
});

describe('subject tags', () => {
  it('are found anywhere in a subject, any case, and added once, replacing any other', () => {
    expect(subjectTags('Re: Trip [#0123456789AB0123456789AB] and [#ffffffffffffffffffffffff]')).toEqual([
      '0123456789ab0123456789ab',
      'ffffffffffffffffffffffff',
    ]);
    expect(subjectTags('Re: Trip [#0123] [0123456789ab0123456789ab] #0123456789ab0123456789ab')).toEqual([]);
    expect(withSubjectTag('Re: Trip', '0123456789ab0123456789ab')).toBe('Re: Trip [#0123456789ab0123456789ab]');
    expect(withSubjectTag('Re: Trip [#0123456789ab0123456789ab]', '0123456789ab0123456789ab')).toBe(
      'Re: Trip [#0123456789ab0123456789ab]',
    );
    expect(withSubjectTag('', '0123456789ab0123456789ab')).toBe('[#0123456789ab0123456789ab]');
    // Another conversation's tag (pasted by someone else) does not travel on.
    expect(withSubjectTag('Re: Salary [#aaaaaaaaaaaaaaaaaaaaaaaa]', '0123456789ab0123456789ab')).toBe(
      'Re: Salary [#0123456789ab0123456789ab]',
    );
    expect(
      withSubjectTag('Re: [#aaaaaaaaaaaaaaaaaaaaaaaa] Salary [#0123456789ab0123456789ab]', '0123456789ab0123456789ab'),
    ).toBe('Re: Salary [#0123456789ab0123456789ab]');
  });
});
