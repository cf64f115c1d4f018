/**
 * Thread-Index per [MS-OXOMSG] 2.2.1.3 (PidTagConversationIndex): a 22-byte header block (0x01, the
 * FILETIME's bits 63..24, a 16-byte GUID) and 5-byte child blocks (DC, 31-bit time delta, 4 random
 * bits, 4 sequence bits). The expected bytes are worked out here from that description, apart from
 * the code under test.
 */
import { describe, expect, it } from 'vitest';

import {
  childThreadIndex,
  decodeThreadIndex,
  MAX_CHILD_BLOCKS,
  newThreadIndex,
  readThreadIndex,
  replyThreadIndex,
  threadTopic,
} from '../../shared/mail/thread-index';

const GUID = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
const AT = new Date(Date.UTC(2026, 10, 27, 9, 30, 0));
/** 100 ns ticks since 1601-01-01: 11,644,473,600 s between 1601 and 1970. */
const filetime = (d: Date) => (BigInt(d.getTime()) + 11_644_473_600_000n) * 10_000n;

describe('the header block', () => {
  it('is 0x01, the FILETIME without its low 24 bits (big-endian), and the GUID', () => {
    const bytes = newThreadIndex(AT, GUID);
    const expected = Buffer.alloc(22);
    expected[0] = 1;
    let high = filetime(AT) >> 24n;
    for (let i = 5; i >= 1; i--) {
      expected[i] = Number(high & 0xffn);
      high >>= 8n;
    }
    GUID.copy(expected, 6);
    expect(bytes.toString('hex')).toBe(expected.toString('hex'));
    expect(bytes.toString('base64')).toHaveLength(32);
    const decoded = decodeThreadIndex(bytes);
    expect(decoded.guid).toBe(GUID.toString('hex'));
    expect(decoded.children).toEqual([]);
    // 2^24 ticks is 1.68 s: the time is kept to that.
    expect(AT.getTime() - decoded.time.getTime()).toBeGreaterThanOrEqual(0);
    expect(AT.getTime() - decoded.time.getTime()).toBeLessThan(1678);
  });
});

describe('a child block', () => {
  it('an hour later: DC 0, the delta in units of 2^18 ticks, the random and sequence nibbles', () => {
    const parent = newThreadIndex(AT, GUID);
    const later = new Date(AT.getTime() + 3_600_000);
    const bytes = childThreadIndex(parent, later, 0xa5);
    expect(bytes).toHaveLength(27);
    expect(bytes.subarray(0, 22).equals(parent)).toBe(true);
    const diff = filetime(later) - ((filetime(AT) >> 24n) << 24n);
    const word = Number(diff >> 18n);
    expect(bytes.readUInt32BE(22)).toBe(word);
    expect(bytes[26]).toBe(0xa5);
    const [child] = decodeThreadIndex(bytes).children;
    expect(child).toMatchObject({ dc: 0, random: 0xa, sequence: 0x5 });
    expect(diff - child!.deltaTicks).toBeGreaterThanOrEqual(0n);
    expect(diff - child!.deltaTicks).toBeLessThan(1n << 18n);
  });

  it('three years later: DC 1, in units of 2^23 ticks', () => {
    const parent = newThreadIndex(AT, GUID);
    const later = new Date(AT.getTime() + 3 * 365 * 86_400_000);
    const bytes = childThreadIndex(parent, later, 0);
    const diff = filetime(later) - ((filetime(AT) >> 24n) << 24n);
    expect(bytes.readUInt32BE(22)).toBe((0x8000_0000 | Number(diff >> 23n)) >>> 0);
    const [child] = decodeThreadIndex(bytes).children;
    expect(child!.dc).toBe(1);
    expect(diff - child!.deltaTicks).toBeLessThan(1n << 23n);
  });

  it('a time before the header (a clock behind, a forged index) counts as none', () => {
    const bytes = childThreadIndex(newThreadIndex(AT, GUID), new Date(AT.getTime() - 86_400_000), 0);
    expect(bytes.readUInt32BE(22)).toBe(0);
  });
});

describe("reading a sender's Thread-Index", () => {
  const valid = childThreadIndex(newThreadIndex(AT, GUID), new Date(AT.getTime() + 1000), 1).toString('base64');

  it('takes 22 + 5n bytes of base64 with version byte 1, folding whitespace allowed', () => {
    expect(readThreadIndex(valid)?.toString('base64')).toBe(valid);
    expect(readThreadIndex(`${valid.slice(0, 10)}\r\n ${valid.slice(10)}`)?.toString('base64')).toBe(valid);
  });

  it.each([
    ['nothing', ''],
    ['not base64', '!!!!'],
    ['21 bytes', Buffer.alloc(21, 1).toString('base64')],
    ['a broken child block', Buffer.concat([newThreadIndex(AT, GUID), Buffer.alloc(3)]).toString('base64')],
    [
      'another version byte',
      Buffer.concat([Buffer.from([2]), newThreadIndex(AT, GUID).subarray(1)]).toString('base64'),
    ],
    [
      'more children than the bound',
      Buffer.concat([newThreadIndex(AT, GUID), Buffer.alloc(5 * (MAX_CHILD_BLOCKS + 1))]).toString('base64'),
    ],
    ['a megabyte', 'A'.repeat(1_000_000)],
  ])('refuses %s', (_what, value) => {
    expect(readThreadIndex(value)).toBeNull();
  });
});

describe("a reply's Thread-Index", () => {
  const options = {
    arrivedAt: AT,
    threadKey: 'task-1',
    replyKey: 'task-1.answer',
    at: new Date(AT.getTime() + 60_000),
  };

  it("extends the original's by one child block", () => {
    const original = newThreadIndex(new Date(AT.getTime() - 86_400_000), GUID).toString('base64');
    const reply = Buffer.from(replyThreadIndex(original, options), 'base64');
    expect(reply).toHaveLength(27);
    expect(reply.subarray(0, 22).toString('base64')).toBe(original);
    expect(decodeThreadIndex(reply).children).toHaveLength(1);
  });

  it('without one (or an unreadable one), begins one per original, the same for all its replies', () => {
    const answer = Buffer.from(replyThreadIndex(null, options), 'base64');
    const ack = Buffer.from(replyThreadIndex('garbage', { ...options, replyKey: 'task-1.ack' }), 'base64');
    const other = Buffer.from(replyThreadIndex(null, { ...options, threadKey: 'task-2' }), 'base64');
    expect(answer).toHaveLength(27);
    expect(answer.subarray(0, 22).equals(ack.subarray(0, 22))).toBe(true);
    expect(decodeThreadIndex(answer).guid).not.toBe(decodeThreadIndex(other).guid);
    expect(Math.abs(decodeThreadIndex(answer).time.getTime() - AT.getTime())).toBeLessThan(1678);
  });

  it('begins anew rather than extend a chain at its bound', () => {
    const full = Buffer.concat([newThreadIndex(AT, GUID), Buffer.alloc(5 * MAX_CHILD_BLOCKS)]).toString('base64');
    const reply = Buffer.from(replyThreadIndex(full, options), 'base64');
    expect(reply).toHaveLength(27);
    expect(readThreadIndex(reply.toString('base64'))).not.toBeNull();
  });
});

describe('Thread-Topic', () => {
  it.each([
    ['Quote for 40 chairs', 'Quote for 40 chairs'],
    ['RE: AW: Fwd: Quote for 40 chairs', 'Quote for 40 chairs'],
    ['Re[2]: SV: VS: Antw: Quote', 'Quote'],
    ['Re: Quote [#0123456789abcdef01234567]', 'Quote'],
    ['Return policy', 'Return policy'],
    ['Réponse : prix', 'Réponse : prix'],
    ['  Fw:   spaced\t out  ', 'spaced out'],
    ['Re: a\u0000b\u202ec', 'a b c'],
    ['', ''],
  ])('%j is %j', (subject, topic) => {
    expect(threadTopic(subject)).toBe(topic);
  });

  it('is bounded, also for a subject of prefixes only', () => {
    expect(threadTopic('x'.repeat(5000))).toHaveLength(255);
    expect(threadTopic('re:'.repeat(100_000))).toBe('');
  });
});
