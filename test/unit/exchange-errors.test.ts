/**
 * What Exchange Online's answers become: each refusal's failure kind, whether the reply may have
 * gone out, and what inboxq does next (pure classification; the end-to-end tests meet each answer
 * from the local SMTP and IMAP servers).
 */
import { describe, expect, it } from 'vitest';

import { quotaVerdict } from '../../shared/doctor/doctor';
import { describeImapError } from '../../shared/mailbox/imap';
import { describeSmtpError } from '../../shared/reply/smtp';

const config = { mailbox: 'agent@contoso.com', smtp: { host: 'smtp.office365.com', port: 587 }, tlsCa: undefined };
const imap = {
  mailbox: 'agent@contoso.com',
  imap: { host: 'outlook.office365.com', port: 993, secure: true, keepWarmMs: 0 },
};

describe('SMTP answers', () => {
  it('432 4.3.2 is "busy" wherever it comes, never a refused token', () => {
    const response =
      '432 4.3.2 Concurrent connections limit exceeded. Visit https://aka.ms/concurrent_sending for more information.';
    for (const err of [
      { code: 'EAUTH', responseCode: 432, response, command: 'AUTH XOAUTH2' },
      { code: 'EMESSAGE', responseCode: 432, response, command: 'DATA' },
    ]) {
      const d = describeSmtpError(err, config);
      expect(d.failure).toBe('busy');
      expect(d.mayHaveBeenSent).toBe(false);
      expect(d.retryable).toBe(true);
    }
  });

  it('a message failed because its pool was closed is known unsent, to be sent again at once', () => {
    const d = describeSmtpError(new Error('Connection pool was closed'), config);
    expect(d).toMatchObject({ failure: 'transient', poolClosed: true, notSent: true });
    expect(d.mayHaveBeenSent).toBe(false);
    // A connection that broke after the data went out may have delivered it: the Sent folder decides.
    expect(describeSmtpError({ code: 'ECONNECTION', command: 'DATA' }, config).mayHaveBeenSent).toBe(true);
  });

  it('throttling, the daily quota and a full mailbox pause sending; 5.2.252 is still SendAsDenied', () => {
    expect(describeSmtpError({ responseCode: 550, response: '550 5.2.251 Too many errors' }, config).failure).toBe(
      'throttled',
    );
    expect(
      describeSmtpError(
        {
          responseCode: 554,
          response:
            '554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to process message',
        },
        config,
      ).failure,
    ).toBe('throttled');
    const full = describeSmtpError(
      { responseCode: 554, response: '554 5.2.2 mailbox full; QuotaExceededException' },
      config,
    );
    expect(full.failure).toBe('throttled');
    expect(full.summary).toBe(
      'the mailbox agent@contoso.com is full (554 5.2.2 mailbox full; QuotaExceededException) [mailbox agent@contoso.com]',
    );
    expect(
      describeSmtpError({ responseCode: 554, response: '554 5.2.252 SendAsDenied; not allowed' }, config).failure,
    ).toBe('send-as-denied');
    expect(
      describeSmtpError({ responseCode: 535, response: '535 5.7.3 Authentication unsuccessful' }, config).failure,
    ).toBe('auth');
  });
});

describe('IMAP throttling', () => {
  it('carries the back-off Exchange asked for, and says the runs wait it out when it is long', () => {
    const long = describeImapError(
      {
        code: 'ETHROTTLE',
        throttleReset: 300_000,
        responseText: 'Request is throttled. Suggested Backoff Time: 300000 milliseconds',
      },
      imap,
      'UID FETCH',
    );
    expect(long).toMatchObject({ failure: 'throttled', backoffMs: 300_000 });
    expect(long.summary).toBe(
      'Exchange throttled the IMAP session during UID FETCH and asked to wait 300 s [mailbox agent@contoso.com]',
    );
    expect(long.hint).toContain('wait that long without connecting');
    const short = describeImapError({ code: 'ETHROTTLE', throttleReset: 300 }, imap, 'UID MOVE');
    expect(short.backoffMs).toBe(300);
    expect(short.hint).toContain('the next run continues');
  });
});

describe("a mailbox's size against its quota (doctor)", () => {
  const drain = {
    drain: { mailboxRetentionDays: 30, processedFolder: 'inboxq-processed', quarantineFolder: 'inboxq-quarantine' },
  } as Parameters<typeof quotaVerdict>[1];
  it('passes below 90% and fails from it, naming what frees the mailbox', () => {
    const gb = 1024 ** 3;
    expect(quotaVerdict({ used: 44 * gb, limit: 50 * gb }, drain)).toEqual({
      status: 'pass',
      detail: '45056 MB of 51200 MB used (88%)',
    });
    const near = quotaVerdict({ used: 45 * gb, limit: 50 * gb }, drain);
    expect(near.status).toBe('fail');
    expect(near.detail).toBe(
      '46080 MB of 51200 MB used (90%): near its quota, where Exchange stops delivery to it and sending from it',
    );
    expect(near.fix).toContain('INBOXQ_MAILBOX_RETENTION_DAYS (now 30');
  });
});
