/**
 * Issue 3's rules, one row each, run on raw mail through `judgeMail`: the exact path of the drain
 * and of `inboxq check-sender` (mailparser, then the sender policy). Header shapes are those
 * Exchange Online Protection, Gmail and OpenDMARC write, and those an attacker would.
 */
import { describe, expect, it } from 'vitest';

import type { SenderPolicy } from '../../shared/config/types';
import { judgeMail } from '../../shared/sender/judge';

const M365: SenderPolicy = {
  authorizedSenders: ['alice@example.com', '*@partner.org'],
  trustedAuthservId: '',
  microsoftInternalFallback: true,
};
const M365_NO_FALLBACK: SenderPolicy = { ...M365, microsoftInternalFallback: false };
const GMAIL: SenderPolicy = { ...M365, trustedAuthservId: 'mx.google.com', microsoftInternalFallback: false };
const MTA: SenderPolicy = { ...M365, trustedAuthservId: 'mail.example.org', microsoftInternalFallback: false };
const EMPTY: SenderPolicy = { ...M365, authorizedSenders: [] };

const eop = (dmarc: string, d = 'example.com', from = d, action = 'none') =>
  `Authentication-Results: spf=pass (sender IP is 203.0.113.5) smtp.mailfrom=${d}; dkim=pass (signature was verified) header.d=${d};dmarc=${dmarc} action=${action} header.from=${from};compauth=${dmarc === 'pass' ? 'pass reason=100' : 'fail reason=000'}`;
const gmail = (dmarc: string, d = 'example.com', id = 'mx.google.com') =>
  `Authentication-Results: ${id};\r\n       dkim=pass header.i=@${d} header.s=20230601 header.b=AbCdEf12;\r\n       spf=pass (google.com: domain of alice@${d} designates 209.85.220.41 as permitted sender) smtp.mailfrom=alice@${d};\r\n       dmarc=${dmarc} (p=REJECT sp=REJECT dis=NONE) header.from=${d}`;
const opendmarc = (dmarc: string, d = 'example.com', id = 'mail.example.org') =>
  `Authentication-Results: ${id}; dmarc=${dmarc} (p=reject dis=none) header.from=${d}`;
const INTERNAL = 'X-MS-Exchange-Organization-AuthAs: Internal';
const FROM = 'From: Alice <alice@example.com>';

function mail(headers: string[], body = 'Please have a look.'): Buffer {
  return Buffer.from(
    [
      ...headers,
      'To: agent@contoso.com',
      'Subject: task',
      'Message-ID: <t@example.com>',
      'Content-Type: text/plain; charset=utf-8',
      '',
      body,
      '',
    ].join('\r\n'),
  );
}

type Row = [
  name: string,
  headers: string[],
  policy: SenderPolicy,
  verdict: 'accept' | 'reject',
  reason: string,
  sender?: string | null,
];

const rows: Row[] = [
  // Exchange Online Protection, external mail
  [
    'EOP: DMARC pass',
    [eop('pass'), FROM],
    M365,
    'accept',
    'DMARC pass for example.com in the first Authentication-Results header (no authserv-id',
    'alice@example.com',
  ],
  [
    'EOP: DMARC fail, action quarantine',
    [eop('fail', 'example.com', 'example.com', 'quarantine'), FROM],
    M365,
    'reject',
    'DMARC result for example.com is fail',
  ],
  [
    'EOP: DMARC fail, action oreject',
    [eop('fail', 'example.com', 'example.com', 'oreject'), FROM],
    M365,
    'reject',
    'is fail',
  ],
  ['EOP: bestguesspass is not a pass', [eop('bestguesspass'), FROM], M365, 'reject', 'is bestguesspass'],
  ['EOP: none', [eop('none'), FROM], M365, 'reject', 'is none'],
  ['EOP: temperror', [eop('temperror'), FROM], M365, 'reject', 'is temperror'],
  ['EOP: permerror', [eop('permerror'), FROM], M365, 'reject', 'is permerror'],
  ['EOP: passthrough is not a pass', [eop('passthrough'), FROM], M365, 'reject', 'is passthrough'],
  [
    'EOP: compauth pass cannot stand in for DMARC',
    [eop('fail').replace('compauth=fail reason=000', 'compauth=pass reason=109'), FROM],
    M365,
    'reject',
    'is fail',
  ],
  ['EOP: header.from in capitals', [eop('pass', 'example.com', 'EXAMPLE.COM'), FROM], M365, 'accept', 'DMARC pass'],
  [
    'EOP: pass for a subdomain, From on the parent',
    [eop('pass', 'mail.example.com'), FROM],
    M365,
    'reject',
    'is for mail.example.com, not for the From domain example.com',
  ],
  [
    'EOP: no DMARC in the header',
    [
      'Authentication-Results: spf=pass (sender IP is 203.0.113.5) smtp.mailfrom=example.com; dkim=pass header.d=example.com',
      FROM,
    ],
    M365,
    'reject',
    'there is no DMARC result',
  ],
  [
    'EOP: ARC-Authentication-Results does not count',
    ['ARC-Authentication-Results: i=1; mx.microsoft.com 1; dmarc=pass action=none header.from=example.com', FROM],
    M365,
    'reject',
    'no Authentication-Results header',
  ],
  // Microsoft 365 internal mail
  ['intra-tenant: AuthAs Internal, fallback on', [INTERNAL, FROM], M365, 'accept', 'internal Microsoft 365 mail'],
  [
    'intra-tenant: AuthAs internal in lower case',
    ['X-MS-Exchange-Organization-AuthAs: internal', FROM],
    M365,
    'accept',
    'internal Microsoft 365 mail',
  ],
  ['intra-tenant: fallback off', [INTERNAL, FROM], M365_NO_FALLBACK, 'reject', 'internal-mail fallback is off'],
  [
    'intra-tenant: AuthAs Anonymous',
    ['X-MS-Exchange-Organization-AuthAs: Anonymous', FROM],
    M365,
    'reject',
    'no Authentication-Results header',
  ],
  [
    'intra-tenant: AuthAs Partner',
    ['X-MS-Exchange-Organization-AuthAs: Partner', FROM],
    M365,
    'reject',
    'not authenticated',
  ],
  [
    'an Authentication-Results header present decides, not AuthAs',
    [eop('fail'), INTERNAL, FROM],
    M365,
    'reject',
    'is fail',
  ],
  [
    'AuthAs Internal with a DMARC-less Authentication-Results',
    ['Authentication-Results: spf=none smtp.mailfrom=example.com', INTERNAL, FROM],
    M365,
    'reject',
    'no DMARC result',
  ],
  [
    'no authentication at all',
    [FROM],
    M365,
    'reject',
    'there is no Authentication-Results header, so the sender is not authenticated',
  ],
  // Gmail
  ['Gmail: pass, trusted mx.google.com', [gmail('pass'), FROM], GMAIL, 'accept', 'authserv-id mx.google.com'],
  ['Gmail: fail', [gmail('fail'), FROM], GMAIL, 'reject', 'is fail'],
  [
    'Gmail: authserv-id in capitals',
    [gmail('pass', 'example.com', 'MX.Google.COM'), FROM],
    GMAIL,
    'accept',
    'DMARC pass',
  ],
  [
    'Gmail header where another authserv-id is trusted',
    [gmail('pass'), FROM],
    MTA,
    'reject',
    'from mx.google.com, not the trusted authserv-id mail.example.org',
  ],
  [
    'Gmail header in Microsoft 365 mode is taken as it is',
    [gmail('pass'), FROM],
    M365,
    'accept',
    'authserv-id mx.google.com',
  ],
  // a generic MTA (OpenDMARC)
  ['MTA: pass', [opendmarc('pass'), FROM], MTA, 'accept', 'authserv-id mail.example.org'],
  [
    'MTA: authres-version after the id',
    ['Authentication-Results: mail.example.org 1; dmarc=pass header.from=example.com', FROM],
    MTA,
    'accept',
    'DMARC pass',
  ],
  [
    'MTA: quoted authserv-id',
    ['Authentication-Results: "mail.example.org"; dmarc=pass header.from=example.com', FROM],
    MTA,
    'accept',
    'DMARC pass',
  ],
  ['MTA: none', ['Authentication-Results: mail.example.org; none', FROM], MTA, 'reject', 'no DMARC result'],
  [
    'MTA: SPF only',
    ['Authentication-Results: mail.example.org; spf=pass smtp.mailfrom=example.com', FROM],
    MTA,
    'reject',
    'no DMARC result',
  ],
  [
    'MTA: two DMARC results, one failing',
    [
      'Authentication-Results: mail.example.org; dmarc=pass header.from=example.com; dmarc=fail header.from=example.com',
      FROM,
    ],
    MTA,
    'reject',
    'is fail',
  ],
  [
    'MTA: folded over several lines',
    ['Authentication-Results: mail.example.org;\r\n\tdmarc=pass\r\n\t(p=reject)\r\n\theader.from=example.com', FROM],
    MTA,
    'accept',
    'DMARC pass',
  ],
  [
    'MTA: unparseable first header',
    ['Authentication-Results: mail.example.org; dmarc=pass (unterminated', FROM],
    MTA,
    'reject',
    "can't be parsed (unterminated comment)",
  ],
  // adversarial
  [
    'pass inside a comment, fail outside',
    [
      'Authentication-Results: mail.example.org; spf=pass (x dmarc=pass y) smtp.mailfrom=example.com; dmarc=fail header.from=example.com',
      FROM,
    ],
    MTA,
    'reject',
    'is fail',
  ],
  [
    'pass and a semicolon inside a comment, no DMARC outside',
    [
      'Authentication-Results: mail.example.org; spf=pass (dmarc=pass; header.from=example.com) smtp.mailfrom=example.com',
      FROM,
    ],
    MTA,
    'reject',
    'no DMARC result',
  ],
  [
    'pass inside a quoted reason',
    ['Authentication-Results: mail.example.org; dmarc=fail reason="dmarc=pass" header.from=example.com', FROM],
    MTA,
    'reject',
    'is fail',
  ],
  [
    'header.from of another domain',
    [eop('pass', 'evil.test'), FROM],
    M365,
    'reject',
    'is for evil.test, not for the From domain example.com',
  ],
  ['a passing header below a failing first one', [eop('fail'), eop('pass'), FROM], M365, 'reject', 'is fail'],
  [
    'a passing header below a first one from elsewhere',
    [opendmarc('pass', 'example.com', 'mx.attacker.test'), opendmarc('pass'), FROM],
    MTA,
    'reject',
    'from mx.attacker.test, not the trusted authserv-id',
  ],
  [
    'lookalike authserv-id with a suffix',
    [opendmarc('pass', 'example.com', 'mail.example.org.evil.com'), FROM],
    MTA,
    'reject',
    'not the trusted authserv-id mail.example.org',
  ],
  [
    'lookalike authserv-id with a prefix',
    [opendmarc('pass', 'example.com', 'evil-mail.example.org'), FROM],
    MTA,
    'reject',
    'not the trusted authserv-id',
  ],
  [
    'display-name spoofing',
    [eop('pass', 'evil.test'), 'From: "alice@example.com" <mallory@evil.test>'],
    M365,
    'reject',
    'mallory@evil.test is not on the authorized-senders list',
    'mallory@evil.test',
  ],
  [
    'an address inside the display name',
    [eop('pass', 'evil.test'), 'From: "Alice <alice@example.com>" <mallory@evil.test>'],
    M365,
    'reject',
    'not on the authorized-senders list',
    'mallory@evil.test',
  ],
  [
    'an encoded-word address',
    [eop('pass'), 'From: =?utf-8?B?YWxpY2VAZXhhbXBsZS5jb20=?='],
    M365,
    'reject',
    'exactly one address',
    null,
  ],
  [
    'an encoded-word display name with a plain address',
    [eop('pass'), 'From: =?utf-8?B?QWxpY2U=?= <alice@example.com>'],
    M365,
    'accept',
    'authorized sender',
    'alice@example.com',
  ],
  ['two From headers', [eop('pass'), FROM, 'From: mallory@evil.test'], M365, 'reject', '2 From headers', null],
  [
    'two addresses in one From',
    [eop('pass'), 'From: alice@example.com, mallory@evil.test'],
    M365,
    'reject',
    'exactly one address',
    null,
  ],
  ['group syntax', [eop('pass'), 'From: undisclosed-recipients:;'], M365, 'reject', 'exactly one address', null],
  ['no From header', [eop('pass')], M365, 'reject', 'no From header', null],
  [
    'an address without a domain',
    [eop('pass'), 'From: alice'],
    M365,
    'reject',
    'must hold exactly one address; it holds 0',
    null,
  ],
  [
    'an IP-literal domain',
    [eop('pass'), 'From: alice@[203.0.113.5]'],
    M365,
    'reject',
    'not a plain e-mail address',
    null,
  ],
  [
    'an address in capitals counts lower-cased',
    [eop('pass'), 'From: ALICE@EXAMPLE.COM'],
    M365,
    'accept',
    'authorized sender',
    'alice@example.com',
  ],
  [
    'an address with a trailing comment',
    [eop('pass'), 'From: alice@example.com (Alice)'],
    M365,
    'accept',
    'authorized sender',
    'alice@example.com',
  ],
  [
    'Sender and Return-Path do not stand in for From',
    [
      eop('pass', 'evil.test'),
      'Sender: alice@example.com',
      'Return-Path: <alice@example.com>',
      'From: mallory@evil.test',
    ],
    M365,
    'reject',
    'not on the authorized-senders list',
    'mallory@evil.test',
  ],
  // loop protection (RFC 3834)
  [
    'Auto-Submitted: auto-generated',
    [eop('pass'), 'Auto-Submitted: auto-generated', FROM],
    M365,
    'reject',
    'auto-generated (Auto-Submitted: auto-generated)',
  ],
  [
    'Auto-Submitted: auto-replied',
    [eop('pass'), 'Auto-Submitted: auto-replied', FROM],
    M365,
    'reject',
    'auto-generated',
  ],
  [
    'Auto-Submitted: auto-notified with a parameter',
    [eop('pass'), 'Auto-Submitted: auto-notified; owner-email="x@example.com"', FROM],
    M365,
    'reject',
    'auto-generated',
  ],
  ['Auto-Submitted: no is a person', [eop('pass'), 'Auto-Submitted: no', FROM], M365, 'accept', 'authorized sender'],
  [
    'a delivery status notification',
    [eop('pass'), FROM, 'Content-Type: multipart/report; report-type=delivery-status; boundary="b"'],
    M365,
    'reject',
    'delivery or read report',
  ],
  [
    'a read receipt',
    [eop('pass'), FROM, 'Content-Type: multipart/report; report-type="disposition-notification"; boundary="b"'],
    M365,
    'reject',
    'delivery or read report',
  ],
  ['Precedence: bulk', [eop('pass'), 'Precedence: bulk', FROM], M365, 'reject', 'Precedence: bulk'],
  ['Precedence: junk', [eop('pass'), 'Precedence: junk', FROM], M365, 'reject', 'Precedence: junk'],
  ['Precedence: list', [eop('pass'), 'Precedence: list', FROM], M365, 'reject', 'Precedence: list'],
  [
    'a mailing list (List-Id)',
    [eop('pass'), 'List-Id: <team.lists.example.com>', FROM],
    M365,
    'reject',
    'mailing-list mail',
  ],
  ['X-Autoreply', [eop('pass'), 'X-Autoreply: yes', FROM], M365, 'reject', 'automatic reply'],
  [
    "inboxq's own reply coming back",
    [eop('pass'), 'Auto-Submitted: auto-replied', 'X-Auto-Response-Suppress: All', FROM],
    M365,
    'reject',
    'auto-generated',
  ],
  // authorization
  [
    'authorized by a *@domain pattern',
    [eop('pass', 'partner.org'), 'From: bob@partner.org'],
    M365,
    'accept',
    'bob@partner.org is an authorized sender',
    'bob@partner.org',
  ],
  [
    'no implicit subdomains',
    [eop('pass', 'eu.partner.org'), 'From: bob@eu.partner.org'],
    M365,
    'reject',
    'not on the authorized-senders list',
  ],
  [
    'a lookalike domain ending',
    [eop('pass', 'evilpartner.org'), 'From: bob@evilpartner.org'],
    M365,
    'reject',
    'not on the authorized-senders list',
  ],
  [
    'authenticated but not listed',
    [eop('pass'), 'From: eve@example.com'],
    M365,
    'reject',
    'eve@example.com is not on the authorized-senders list',
  ],
  [
    'an empty list admits no one',
    [eop('pass'), FROM],
    EMPTY,
    'reject',
    'the authorized-senders list is empty, which admits no one',
  ],
];

describe('sender verdicts on raw mail', () => {
  it('has at least 60 cases', () => expect(rows.length).toBeGreaterThanOrEqual(60));

  it.each(rows)('%s', (_name, headers, policy, verdict, reason, sender) => {
    const judged = judgeMail(mail(headers), policy);
    expect(judged.kind).toBe('mail');
    if (judged.kind !== 'mail') return;
    expect(judged.verdict.verdict).toBe(verdict);
    expect(judged.verdict.reasons.join(' | ')).toContain(reason);
    if (sender !== undefined) expect(judged.verdict.sender).toBe(sender);
  });

  it('lines in the body that look like headers count for nothing', () => {
    const body = [
      'From: alice@example.com',
      'Authentication-Results: spf=pass smtp.mailfrom=example.com; dmarc=pass action=none header.from=example.com',
      'X-MS-Exchange-Organization-AuthAs: Internal',
    ].join('\r\n');
    const judged = judgeMail(mail(['From: mallory@evil.test'], body), M365);
    expect(judged.kind === 'mail' && judged.verdict).toMatchObject({ verdict: 'reject', sender: 'mallory@evil.test' });
    expect(judged.kind === 'mail' && judged.verdict.reasons[0]).toContain('there is no Authentication-Results header');
  });

  it('flags auto-generated mail so it is never answered', () => {
    const judged = judgeMail(mail([eop('pass'), 'Auto-Submitted: auto-replied', FROM]), M365);
    expect(judged.kind === 'mail' && judged.verdict.autoGenerated).toBe(true);
  });
});
