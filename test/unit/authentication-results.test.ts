import { describe, expect, it } from 'vitest';

import {
  AuthResultsSyntaxError,
  parseAuthenticationResults,
  tokenize,
} from '../../shared/sender/authentication-results';

describe('RFC 8601 Authentication-Results parser', () => {
  it.each([
    [
      'Exchange Online Protection (no authserv-id)',
      'spf=pass (sender IP is 203.0.113.5) smtp.mailfrom=example.com; dkim=pass (signature was verified) header.d=example.com;dmarc=pass action=none header.from=example.com;compauth=pass reason=100',
      '',
      [
        ['spf', 'pass', { 'smtp.mailfrom': 'example.com' }],
        ['dkim', 'pass', { 'header.d': 'example.com' }],
        ['dmarc', 'pass', { action: 'none', 'header.from': 'example.com' }],
        ['compauth', 'pass', {}],
      ],
    ],
    [
      'Gmail',
      'mx.google.com;\r\n       dkim=pass header.i=@example.org header.s=s1 header.b=abc;\r\n       spf=pass (google.com: domain of a@example.org designates 1.2.3.4 as permitted sender) smtp.mailfrom=a@example.org;\r\n       dmarc=pass (p=REJECT sp=REJECT dis=NONE) header.from=example.org',
      'mx.google.com',
      [
        ['dkim', 'pass', { 'header.i': '@example.org', 'header.s': 's1', 'header.b': 'abc' }],
        ['spf', 'pass', { 'smtp.mailfrom': 'a@example.org' }],
        ['dmarc', 'pass', { 'header.from': 'example.org' }],
      ],
    ],
    [
      'authserv-id with a version',
      'mx.example.com 1; dmarc=fail header.from=example.net',
      'mx.example.com',
      [['dmarc', 'fail', { 'header.from': 'example.net' }]],
    ],
    ['no results', 'example.org; none', 'example.org', []],
    [
      'quoted reason',
      'mx.example.com; dmarc=fail reason="policy; p=reject" header.from=example.com',
      'mx.example.com',
      [['dmarc', 'fail', { 'header.from': 'example.com' }]],
    ],
    [
      'method version',
      'mx.example.com; dkim/1=pass header.d=example.com',
      'mx.example.com',
      [['dkim', 'pass', { 'header.d': 'example.com' }]],
    ],
    [
      'upper case',
      'MX.Example.COM; DMARC=PASS Header.From=Example.COM',
      'mx.example.com',
      [['dmarc', 'pass', { 'header.from': 'Example.COM' }]],
    ],
  ])('%s', (_name, header, authservId, expected) => {
    const parsed = parseAuthenticationResults(header);
    expect(parsed.authservId).toBe(authservId);
    expect(
      parsed.results.map((r) => [
        r.method,
        r.result,
        Object.fromEntries(Object.entries(r.properties).filter(([k]) => k !== 'reason')),
      ]),
    ).toEqual((expected as [string, string, Record<string, string>][]).map(([m, r, p]) => [m, r, p]));
  });

  it('drops comments, even nested ones holding dmarc=pass and semicolons', () => {
    const parsed = parseAuthenticationResults(
      'mx.example.com; spf=pass (x (dmarc=pass; y) z) smtp.mailfrom=a.com; dmarc=fail header.from=a.com',
    );
    expect(parsed.results.map((r) => `${r.method}=${r.result}`)).toEqual(['spf=pass', 'dmarc=fail']);
  });

  it('keeps the version number', () => {
    expect(parseAuthenticationResults('mx.example.com 1; none').version).toBe(1);
  });

  it('reads the reason', () => {
    expect(parseAuthenticationResults('a.example; dmarc=fail reason="p=reject"').results[0]!.reason).toBe('p=reject');
  });

  it.each([
    ['unterminated comment', 'mx.example.com; dmarc=pass (oops'],
    ['unbalanced parenthesis', 'mx.example.com; dmarc=pass) header.from=a.com'],
    ['unterminated quoted string', 'mx.example.com; dmarc=fail reason="x'],
    ['missing result', 'mx.example.com; dmarc'],
    ['garbage after the authserv-id', 'mx.example.com extra words; dmarc=pass'],
    ['a result that is not a keyword', 'mx.example.com; dmarc=p@ss'],
    ['empty', ''],
  ])('refuses %s', (_name, header) => {
    expect(() => parseAuthenticationResults(header)).toThrow(AuthResultsSyntaxError);
  });

  it('tokenizes quoted-pairs inside quoted strings and comments', () => {
    expect(tokenize('a="b\\"c" (x\\)y) d')).toEqual([
      { kind: 'word', value: 'a', quoted: false },
      { kind: '=' },
      { kind: 'word', value: 'b"c', quoted: true },
      { kind: 'word', value: 'd', quoted: false },
    ]);
  });
});
