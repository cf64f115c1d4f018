/**
 * Custom metrics, read through an in-memory OpenTelemetry reader, and the function registrations
 * the Functions host would read (captured, as the host can't run here).
 */
import { app } from '@azure/functions';
import type { DataPoint } from '@opentelemetry/sdk-metrics';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';

import { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import { drainMailbox } from '../../shared/drain/drain';
import { type Heartbeat, SILENCE_WINDOW_MS, silentMailboxes } from '../../shared/ops/silence';
import { sendReply } from '../../shared/reply/reply';
import { memoryLogger } from '../../shared/telemetry/log';
import { METRIC_NAMES } from '../../shared/telemetry/metrics';
import { setupTelemetry } from '../../shared/telemetry/setup';
import { buildMail, eopFail } from '../helpers/mail';
import { useMetricReader } from '../helpers/metrics';

const { points } = useMetricReader();
let stack: LocalStack;
beforeAll(async () => {
  stack = await LocalStack.start();
});
afterAll(async () => {
  await stack?.stop();
});

function sumBy(ps: DataPoint<unknown>[], attribute: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of ps)
    out[String(p.attributes[attribute])] = (out[String(p.attributes[attribute])] ?? 0) + (p.value as number);
  return out;
}

describe('custom metrics', () => {
  it('count mail by outcome, rejections by reason, replies, token requests and runs', async () => {
    const mailbox = 'metrics@company.test';
    const rt = runtimeFor(stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test' }));
    await stack.appendMail(mailbox, buildMail({ from: 'a@partner.test', to: mailbox }));
    await stack.appendMail(
      mailbox,
      buildMail({ from: 'ceo@company.test', to: mailbox, authResults: eopFail('company.test') }),
    );
    await stack.appendMail(mailbox, buildMail({ from: 'b@elsewhere.test', to: mailbox }));
    await stack.appendMail(mailbox, Buffer.from('\u0001not a mail'));
    const summary = await drainMailbox({ ...rt, log: memoryLogger() });
    const taskId = summary.outcomes.find((o) => o.outcome === 'queued')!.taskId!;
    await sendReply({ type: 'inboxq.reply', version: 1, taskId, mailbox, text: 'ok' }, { ...rt, log: memoryLogger() });
    await sendReply({ type: 'inboxq.reply', version: 1, taskId, mailbox, text: 'ok' }, { ...rt, log: memoryLogger() });

    expect(sumBy(await points('inboxq.mail'), 'outcome')).toEqual({ queued: 1, rejected: 2, quarantined: 1 });
    expect(sumBy(await points('inboxq.mail.rejected'), 'reason')).toEqual({
      'not-authenticated': 1,
      'not-authorized': 1,
    });
    expect(sumBy(await points('inboxq.reply'), 'outcome')).toEqual({ sent: 1, 'already-sent': 1 });
    expect(sumBy(await points('inboxq.drain.runs'), 'outcome')).toEqual({ ok: 1 });
    expect(sumBy(await points('inboxq.token.requests'), 'outcome')['issued']).toBeGreaterThanOrEqual(1);
    const durations = await points('inboxq.drain.duration');
    expect((durations[0]!.value as { count: number }).count).toBe(1);
  });

  it('send a heartbeat per run that drained, with the names the silence alert reads; silence is judged on what was recorded', async () => {
    const mailbox = 'heartbeat@company.test';
    const rt = runtimeFor(stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test' }));
    await stack.appendMail(mailbox, buildMail({ from: 'a@partner.test', to: mailbox }));
    await drainMailbox({ ...rt, log: memoryLogger() });
    const recordedAt = Date.now();
    const beats = (await points(METRIC_NAMES.heartbeat)).filter((p) => p.attributes['mailbox'] === mailbox);
    expect(beats.map((p) => [p.attributes, p.value])).toEqual([[{ mailbox, key: 'default' }, 1]]);
    const backlog = (await points(METRIC_NAMES.backlog)).find((p) => p.attributes['mailbox'] === mailbox);
    expect((backlog!.value as { count: number; max: number }).count).toBe(1);
    const lag = (await points(METRIC_NAMES.lag)).find((p) => p.attributes['mailbox'] === mailbox);
    expect((lag!.value as { count: number }).count).toBe(1);

    // The recorded points as Application Insights stores them (customMetrics: name, dimensions, valueSum).
    const heartbeats: Heartbeat[] = beats.map((p) => ({
      name: METRIC_NAMES.heartbeat,
      key: String(p.attributes['key']),
      mailbox: String(p.attributes['mailbox']),
      timestamp: recordedAt,
      value: p.value as number,
    }));
    expect(silentMailboxes(['default', 'sales'], heartbeats, recordedAt + 60_000)).toEqual(['sales']);
    expect(silentMailboxes(['default'], heartbeats, recordedAt + SILENCE_WINDOW_MS - 1000)).toEqual([]);
    expect(silentMailboxes(['default'], heartbeats, recordedAt + SILENCE_WINDOW_MS)).toEqual(['default']);
  });

  it('count refused credentials by mailbox and stage, what the auth alert reads: a wrong secret (token), a login Exchange refuses (imap)', async () => {
    const wrongSecret = stack.registerApp();
    stack.vault.setSecret(wrongSecret.secretName, 'wrong~not-the-secret');
    const refused = stack.registerApp();
    stack.idp.imapRefusedApps.add(refused.clientId);
    const cases = [
      ['auth-token@company.test', wrongSecret.settings],
      ['auth-imap@company.test', refused.settings],
    ] as const;
    for (const [mailbox, settings] of cases) {
      await stack.appendMail(mailbox, buildMail({ from: 'a@partner.test', to: mailbox }));
      const rt = runtimeFor(stack.settings(mailbox, { ...settings, INBOXQ_AUTHORIZED_SENDERS: '*@partner.test' }));
      await expect(drainMailbox({ ...rt, log: memoryLogger() })).rejects.toThrow();
      expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(1);
    }
    const byMailbox = (await points(METRIC_NAMES.authFailures)).map((p) => [p.attributes, p.value]);
    expect(byMailbox).toEqual(
      expect.arrayContaining([
        [{ mailbox: 'auth-token@company.test', stage: 'token' }, 1],
        [{ mailbox: 'auth-imap@company.test', stage: 'imap' }, 1],
      ]),
    );
    expect(byMailbox).toHaveLength(2);
  });

  it('are not exported anywhere without APPLICATIONINSIGHTS_CONNECTION_STRING', () => {
    expect(setupTelemetry({})).toBe(false);
  });
});

describe('function registrations', () => {
  it('register the schedule, the drain, reply and poison queue triggers and the start hook as the host expects', async () => {
    const timer = vi.spyOn(app, 'timer').mockImplementation(() => undefined);
    const queue = vi.spyOn(app, 'storageQueue').mockImplementation(() => undefined);
    const appStart = vi.spyOn(app.hook, 'appStart').mockImplementation(() => ({ dispose: () => undefined }));
    await import('../../functions/schedule.js');
    await import('../../functions/drain.js');
    await import('../../functions/reply.js');
    await import('../../functions/reply-poison.js');
    await import('../../functions/startup.js');
    expect(timer.mock.calls.map(([name, o]) => [name, o.schedule, o.useMonitor, o.runOnStartup])).toEqual([
      ['drainSchedule', '%INBOXQ_DRAIN_SCHEDULE%', false, false],
    ]);
    expect(queue.mock.calls.map(([name, o]) => [name, o.queueName, o.connection])).toEqual([
      ['drain', 'drain-requests', 'AzureWebJobsStorage'],
      ['reply', 'replies', 'AzureWebJobsStorage'],
      ['replyPoison', 'replies-poison', 'AzureWebJobsStorage'],
    ]);
    expect(appStart).toHaveBeenCalledTimes(1);
    // At start, invalid settings are said at once, naming the mailbox and the app setting.
    const saved = { ...process.env };
    const errors = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      Object.assign(process.env, { INBOXQ_MAILBOXES: 'sales', INBOXQ_SALES__MAILBOX: 'not-an-address' });
      await appStart.mock.calls[0]![0]({} as never);
      expect(errors.mock.calls.map((c) => String(c[0])).join('\n')).toContain(
        'mailbox "sales": INBOXQ_SALES__MAILBOX must be an e-mail address',
      );
    } finally {
      errors.mockRestore();
      for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
    }
  });
});
