/**
 * The sender verdict, table-driven over real header shapes. Each row: the headers (topmost first),
 * the policy, the verdict, and a piece of the reason an admin reads.
 */
import { describe, expect, it } from 'vitest';

import type { SenderPolicy } from '../../shared/config/types';
import type { HeaderLine } from '../../shared/mail/parse';
import { evaluateSender, isAuthorized } from '../../shared/sender/policy';

const m365: SenderPolicy = {
  authorizedSenders: ['alice@example.com', '*@partner.org'],
  trustedAuthservId: '',
  microsoftInternalFallback: true,
};
const mx: SenderPolicy = { ...m365, trustedAuthservId: 'mx.example.com', microsoftInternalFallback: false };

function headers(raw: string): HeaderLine[] {
  return raw
    .split(/\n(?=\S)/)
    .filter(Boolean)
    .map((line) => ({ key: line.slice(0, line.indexOf(':')).toLowerCase(), line }));
}

const eop = (d: string, dmarc = 'pass', from = d) =>
  `Authentication-Results: spf=pass (sender IP is 203.0.113.5) smtp.mailfrom=${d}; dkim=pass (signature was verified) header.d=${d};dmarc=${dmarc} action=none header.from=${from};compauth=pass reason=100`;

describe('sender policy', () => {
  it.each<[string, string, SenderPolicy, 'accept' | 'reject', string]>([
    [
      'EOP external pass',
      `${eop('example.com')}\nFrom: Alice <alice@example.com>`,
      m365,
      'accept',
      'DMARC pass for example.com',
    ],
    [
      'EOP external fail',
      `${eop('example.com', 'fail')}\nFrom: alice@example.com`,
      m365,
      'reject',
      'DMARC result for example.com is fail',
    ],
    [
      'EOP bestguesspass is not a pass',
      `${eop('partner.org', 'bestguesspass')}\nFrom: bob@partner.org`,
      m365,
      'reject',
      'is bestguesspass',
    ],
    [
      'wildcard domain',
      `${eop('partner.org')}\nFrom: bob@partner.org`,
      m365,
      'accept',
      'bob@partner.org is an authorized sender',
    ],
    [
      'no implicit subdomains',
      `${eop('eu.partner.org')}\nFrom: bob@eu.partner.org`,
      m365,
      'reject',
      'not on the authorized-senders list',
    ],
    [
      'unlisted authenticated sender',
      `${eop('example.com')}\nFrom: eve@example.com`,
      m365,
      'reject',
      'eve@example.com is not on the authorized-senders list',
    ],
    [
      'intra-tenant with AuthAs Internal',
      'X-MS-Exchange-Organization-AuthAs: Internal\nFrom: alice@example.com',
      m365,
      'accept',
      'internal Microsoft 365 mail',
    ],
    [
      'AuthAs Internal with the fallback off',
      'X-MS-Exchange-Organization-AuthAs: Internal\nFrom: alice@example.com',
      mx,
      'reject',
      'internal-mail fallback is off',
    ],
    [
      'AuthAs Anonymous',
      'X-MS-Exchange-Organization-AuthAs: Anonymous\nFrom: alice@example.com',
      m365,
      'reject',
      'no Authentication-Results header',
    ],
    [
      'A-R present decides over AuthAs',
      `${eop('example.com', 'fail')}\nX-MS-Exchange-Organization-AuthAs: Internal\nFrom: alice@example.com`,
      m365,
      'reject',
      'is fail',
    ],
    [
      'pass inside a comment',
      'Authentication-Results: spf=pass (x dmarc=pass y) smtp.mailfrom=example.com; dmarc=fail header.from=example.com\nFrom: alice@example.com',
      m365,
      'reject',
      'is fail',
    ],
    [
      'header.from of another domain',
      `${eop('evil.test', 'pass', 'evil.test')}\nFrom: alice@example.com`,
      m365,
      'reject',
      'is for evil.test, not for the From domain example.com',
    ],
    [
      'a passing header below a failing first one',
      `${eop('example.com', 'fail')}\n${eop('example.com')}\nFrom: alice@example.com`,
      m365,
      'reject',
      'is fail',
    ],
    [
      'trusted authserv-id',
      'Authentication-Results: mx.example.com; dmarc=pass header.from=example.com\nFrom: alice@example.com',
      mx,
      'accept',
      'authserv-id mx.example.com',
    ],
    [
      'lookalike authserv-id',
      'Authentication-Results: mx.example.com.evil.com; dmarc=pass header.from=example.com\nFrom: alice@example.com',
      mx,
      'reject',
      'not the trusted authserv-id mx.example.com',
    ],
    [
      'display-name spoofing',
      `${eop('evil.test')}\nFrom: "alice@example.com" <mallory@evil.test>`,
      m365,
      'reject',
      'mallory@evil.test is not on the authorized-senders list',
    ],
    [
      'two From headers',
      `${eop('example.com')}\nFrom: alice@example.com\nFrom: eve@evil.test`,
      m365,
      'reject',
      '2 From headers',
    ],
    [
      'two addresses in From',
      `${eop('example.com')}\nFrom: alice@example.com, eve@evil.test`,
      m365,
      'reject',
      'exactly one address',
    ],
    [
      'encoded-word address',
      `${eop('example.com')}\nFrom: =?utf-8?B?YWxpY2VAZXhhbXBsZS5jb20=?=`,
      m365,
      'reject',
      'exactly one address',
    ],
    ['no From', `${eop('example.com')}\nSubject: hi`, m365, 'reject', 'no From header'],
    [
      'auto-submitted',
      `${eop('example.com')}\nAuto-Submitted: auto-replied\nFrom: alice@example.com`,
      m365,
      'reject',
      'auto-generated',
    ],
    [
      'Auto-Submitted: no is a person',
      `${eop('example.com')}\nAuto-Submitted: no\nFrom: alice@example.com`,
      m365,
      'accept',
      'authorized sender',
    ],
    [
      'bulk precedence',
      `${eop('example.com')}\nPrecedence: bulk\nFrom: alice@example.com`,
      m365,
      'reject',
      'Precedence: bulk',
    ],
    [
      'delivery report',
      `${eop('example.com')}\nContent-Type: multipart/report; report-type=delivery-status; boundary=x\nFrom: alice@example.com`,
      m365,
      'reject',
      'delivery or read report',
    ],
    [
      'folded header',
      'Authentication-Results: mx.example.com;\n\tdmarc=pass\n\theader.from=example.com\nFrom: alice@example.com',
      mx,
      'accept',
      'DMARC pass',
    ],
  ])('%s', (_name, raw, policy, verdict, reason) => {
    const result = evaluateSender(headers(raw), policy);
    expect(result.verdict).toBe(verdict);
    expect(result.reasons.join(' | ')).toContain(reason);
  });

  it('an empty authorized-senders list admits no one, and says so', () => {
    const r = evaluateSender(headers(`${eop('example.com')}\nFrom: alice@example.com`), {
      ...m365,
      authorizedSenders: [],
    });
    expect(r.verdict).toBe('reject');
    expect(r.reasons[0]).toContain('the authorized-senders list is empty, which admits no one');
  });

  it.each([
    ['Alice@Example.com', ['alice@example.com'], true],
    ['bob@partner.org', ['*@partner.org'], true],
    ['bob@sub.partner.org', ['*@partner.org'], false],
    ['bob@partner.org.evil', ['*@partner.org'], false],
    ['alice@example.com', [], false],
  ])('isAuthorized(%s, %j) = %s', (address, list, expected) => expect(isAuthorized(address, list)).toBe(expected));
});
