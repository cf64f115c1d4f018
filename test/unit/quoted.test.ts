import { describe, expect, it } from 'vitest';
import { MAX_SPLIT_CHARS, splitQuoted } from '../../shared/mail/quoted';
import { subjectTags, withSubjectTag } from '../../shared/conversation/conversations';

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
    ['German Outlook', 'Ja.\n\nVon: Agent <agent@company.com>\nGesendet: Montag, 23. November 2026 10:00\nAn: Alice\nBetreff: Reise\n\nBuchen?\n', 'Ja.\n', /^Von: Agent/],
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
  ])('%s: everything is new text', (_name, text) => {
    expect(splitQuoted(text)).toEqual({ newText: text, quotedText: '' });
  });

  it('leaves bodies over the limit whole', () => {
    const text = `Hi\n\nOn Mon, Alice <a@b.c> wrote:\n> x\n${'y'.repeat(MAX_SPLIT_CHARS)}`;
    expect(splitQuoted(text)).toEqual({ newText: text, quotedText: '' });
  });
});

describe('subject tags', () => {
  it('are found anywhere in a subject, any case, and added once, replacing any other', () => {
    expect(subjectTags('Re: Trip [#0123456789AB] and [#ffffffffffff]')).toEqual(['0123456789ab', 'ffffffffffff']);
    expect(subjectTags('Re: Trip [#0123] [0123456789ab] #0123456789ab')).toEqual([]);
    expect(withSubjectTag('Re: Trip', '0123456789ab')).toBe('Re: Trip [#0123456789ab]');
    expect(withSubjectTag('Re: Trip [#0123456789ab]', '0123456789ab')).toBe('Re: Trip [#0123456789ab]');
    expect(withSubjectTag('', '0123456789ab')).toBe('[#0123456789ab]');
    // Another conversation's tag (pasted by someone else) does not travel on.
    expect(withSubjectTag('Re: Salary [#aaaaaaaaaaaa]', '0123456789ab')).toBe('Re: Salary [#0123456789ab]');
    expect(withSubjectTag('Re: [#aaaaaaaaaaaa] Salary [#0123456789ab]', '0123456789ab')).toBe('Re: Salary [#0123456789ab]');
  });
});
