/**
 * The drain schedule's tick, the one function an idle deployment runs (shared/drain/tick.ts), on
 * the local host with the product's host.json: what an idle tick costs (a NOOP, no Storage request,
 * no log line, a heartbeat), mail drained by the tick itself, several mailboxes in one invocation,
 * and what is left to the drain function: a burst, a look that hangs, a mailbox Exchange throttles.
 * Storage is reached through byte-counting proxies, IMAP through the fault proxy.
 */
import type { DataPoint } from '@opentelemetry/sdk-metrics';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { main } from '../../cli/inboxq';
import { telemetryOf } from '../../localstack/host/app-insights';
import { readHostJson } from '../../localstack/host/settings';
import { TcpProxy } from '../../localstack/proxies';
import { runtimeFor } from '../../localstack/runtime';
import { decodeQueueMessage, DRAIN_REQUESTS_QUEUE, type DrainRequest } from '../../shared/contract/messages';
import { tickMailbox } from '../../shared/drain/tick';
import { FULL_RUN_INTERVAL_MS } from '../../shared/drain/watch';
import type { DrainOutcome, TickOutcome } from '../../shared/host/handlers';
import { SILENCE_WINDOW_MS, silentMailboxes } from '../../shared/ops/silence';
import type { MailboxStatus } from '../../shared/ops/status';
import { memoryLogger } from '../../shared/telemetry/log';
import { METRIC_NAMES } from '../../shared/telemetry/metrics';
import { hostInvocations, runQueueFunction, runTimerFunction } from '../helpers/app';
import { HostProcess } from '../helpers/host';
import { useProxiedStack } from '../helpers/imap-proxy';
import { buildMail } from '../helpers/mail';
import { useMetricReader } from '../helpers/metrics';
import { expectAllQueuedOnce, queue } from '../helpers/stack';

const { points } = useMetricReader();
const local = useProxiedStack();
const storage: TcpProxy[] = [];
let storageConnection = '';
beforeAll(async () => {
  const { azurite } = local.stack;
  for (const port of [azurite.blobPort, azurite.queuePort, azurite.tablePort]) {
    const proxy = new TcpProxy(port);
    await proxy.start();
    storage.push(proxy);
  }
  const [blob, q, table] = storage as [TcpProxy, TcpProxy, TcpProxy];
  storageConnection = azurite.connectionString
    .replace(`:${azurite.blobPort}/`, `:${blob.port}/`)
    .replace(`:${azurite.queuePort}/`, `:${q.port}/`)
    .replace(`:${azurite.tablePort}/`, `:${table.port}/`);
});
afterAll(async () => {
  for (const p of storage) await p.stop();
});

const SENDER = 'alice@partner.test';
const storageBytes = () => storage.reduce((sum, p) => sum + p.bytesFromClients, 0);

/** A mailbox reached through the IMAP fault proxy and the Storage proxies. */
function settingsFor(mailbox: string, overrides: Record<string, string | undefined> = {}) {
  return local.stack.settings(mailbox, {
    INBOXQ_AUTHORIZED_SENDERS: SENDER,
    INBOXQ_IMAP_PORT: String(local.proxy.port),
    INBOXQ_DRAIN_SCHEDULE: '*/5 * * * * *',
    AzureWebJobsStorage: storageConnection,
    ...overrides,
  });
}

async function tick(env: Record<string, string | undefined>, logs: string[] = []): Promise<TickOutcome[]> {
  return (await runTimerFunction(local.stack, env, 'drainSchedule', logs)) as TickOutcome[];
}

/** The function's own lines in what the host logged (`<level>: drainSchedule: <line>`). */
const ownLines = (logs: string[]) => logs.filter((l) => /^\w+: drainSchedule: /.test(l));

async function heartbeats(mailbox: string): Promise<number> {
  return ((await points(METRIC_NAMES.heartbeat)) as DataPoint<number>[])
    .filter((p) => p.attributes['mailbox'] === mailbox)
    .reduce((sum, p) => sum + p.value, 0);
}

async function drainRequestsFor(mailbox: string): Promise<DrainRequest[]> {
  const q = queue(local.stack, DRAIN_REQUESTS_QUEUE);
  if (!(await q.exists())) return [];
  const { peekedMessageItems } = await q.peekMessages({ numberOfMessages: 32 });
  return peekedMessageItems
    .map((m) => decodeQueueMessage(m.messageText) as DrainRequest)
    .filter((r) => r.mailbox === mailbox);
}

describe('an idle tick', () => {
  it('is a NOOP on the kept session and nothing else: no Storage request, no log line, no drain request; a heartbeat counts it', async () => {
    const mailbox = 'idle@company.test';
    const env = settingsFor(mailbox);
    // The first tick of an instance runs a drain (what the last run left, the run record), quietly.
    const first: string[] = [];
    expect((await tick(env, first)).map((t) => [t.action, t.why])).toEqual([
      ['drained', 'the first tick of this instance'],
    ]);
    expect(ownLines(first)).toEqual([]);

    const bytes = storageBytes();
    const commands = local.proxy.commands.length;
    const connections = local.proxy.connections;
    const invocations = (await hostInvocations(local.stack)).length;
    const beats = await heartbeats(mailbox);
    const logs: string[] = [];
    for (let i = 0; i < 3; i++) expect((await tick(env, logs)).map((t) => t.action)).toEqual(['idle']);

    expect(storageBytes() - bytes).toBe(0);
    expect(local.proxy.commands.slice(commands)).toEqual(['NOOP', 'NOOP', 'NOOP']);
    expect(local.proxy.connections).toBe(connections);
    expect(ownLines(logs)).toEqual([]);
    expect(await drainRequestsFor(mailbox)).toEqual([]);
    expect((await heartbeats(mailbox)) - beats).toBe(3);

    // What Application Insights gets for them under the product's host.json: no request, no trace.
    const idle = (await hostInvocations(local.stack)).slice(invocations);
    expect(idle.map((i) => [i.function, i.succeeded, i.logs.length])).toEqual([
      ['drainSchedule', true, 0],
      ['drainSchedule', true, 0],
      ['drainSchedule', true, 0],
    ]);
    expect(telemetryOf(idle, readHostJson('.', {}).logLevel)).toEqual({ requests: 0, traces: 0, hostMetrics: 0 });

    // Alive, not silent, for the silence alert: the idle ticks' heartbeats are in its window.
    const now = Date.now();
    const beat = { name: METRIC_NAMES.heartbeat, key: 'default', mailbox, timestamp: now, value: 3 };
    expect(silentMailboxes(['default'], [beat], now + SILENCE_WINDOW_MS - 1000)).toEqual([]);
  });

  it('is a run, quiet, every few minutes: retention and the run record that inboxq status reads', async () => {
    const mailbox = 'periodic@company.test';
    const env = settingsFor(mailbox);
    const rt = runtimeFor(env);
    const log = memoryLogger();
    const t0 = Date.now();
    expect((await tickMailbox({ ...rt, log, now: () => t0 })).action).toBe('drained');
    const recorded = (await rt.ledger.getMailboxState(mailbox))?.['lastRunFinishedAt'];
    expect(recorded).toEqual(expect.any(String));
    expect((await tickMailbox({ ...rt, log, now: () => t0 + 60_000 })).action).toBe('idle');
    const later = await tickMailbox({ ...rt, log, now: () => t0 + FULL_RUN_INTERVAL_MS + 61_000 });
    expect([later.action, later.why]).toEqual(['drained', 'the periodic run (retention, reconcile, the run record)']);
    expect((await rt.ledger.getMailboxState(mailbox))?.['lastRunFinishedAt']).not.toBe(recorded);
    expect(log.lines).toEqual([]);
  });
});

describe('mail', () => {
  it('is drained by the next tick itself, its lines logged: no drain request, no second function on its way', async () => {
    const mailbox = 'tickmail@company.test';
    const env = settingsFor(mailbox);
    await tick(env);
    await local.stack.appendMail(mailbox, buildMail({ from: SENDER, to: mailbox, subject: 'Fast' }));
    const invocations = (await hostInvocations(local.stack)).length;
    const logs: string[] = [];
    const [outcome] = await tick(env, logs);
    expect(outcome).toMatchObject({ action: 'drained', summary: { counts: { seen: 1, queued: 1 } } });
    expect(outcome!.request).toBeUndefined();
    expect(await drainRequestsFor(mailbox)).toEqual([]);
    expect(ownLines(logs).join('\n')).toMatch(/Mail queued as a task/);
    expect(ownLines(logs).join('\n')).toMatch(/Drain run finished/);
    expect((await hostInvocations(local.stack)).slice(invocations).map((i) => i.function)).toEqual(['drainSchedule']);
    await expectAllQueuedOnce(local.stack, env, mailbox, 1);
  });

  it('of several mailboxes costs one timer invocation per tick, all looked at together', async () => {
    const keys = ['m1', 'm2', 'm3'];
    const env = settingsFor('', {
      INBOXQ_MAILBOX: undefined,
      INBOXQ_MAILBOXES: keys.join(','),
      ...Object.fromEntries(keys.map((k) => [`INBOXQ_${k.toUpperCase()}__MAILBOX`, `${k}@company.test`])),
    });
    await tick(env);
    await local.stack.appendMail('m2@company.test', buildMail({ from: SENDER, to: 'm2@company.test' }));
    const invocations = (await hostInvocations(local.stack)).length;
    const outcomes = await tick(env);
    expect(outcomes.map((o) => [o.key, o.action])).toEqual([
      ['m1', 'idle'],
      ['m2', 'drained'],
      ['m3', 'idle'],
    ]);
    expect((await hostInvocations(local.stack)).slice(invocations).map((i) => i.function)).toEqual(['drainSchedule']);
  });

  it('more than a tick drains goes to the drain function once, which drains it all; the ticks leave it alone meanwhile', async () => {
    const mailbox = 'burst@company.test';
    const env = settingsFor(mailbox, { INBOXQ_ACKNOWLEDGE: 'false' });
    await tick(env);
    const mails = Array.from({ length: 30 }, (_, i) => buildMail({ from: SENDER, to: mailbox, subject: `Burst ${i}` }));
    await local.stack.dropIntoMaildir(
      mailbox,
      mails.map((m) => Buffer.from(m)),
    );
    const [first] = await tick(env);
    expect(first).toMatchObject({ action: 'requested', request: { mailbox } });
    expect(first!.why).toMatch(/^30 mails wait in INBOX, more than a tick drains \(25\)/);
    const [second] = await tick(env);
    expect(second!.action).toBe('requested');
    expect(second!.request).toBeUndefined();
    expect(await drainRequestsFor(mailbox)).toHaveLength(1);

    const run = await runQueueFunction(local.stack, env, 'drain');
    expect((run.results as DrainOutcome[]).map((o) => [o.mailbox, o.summary?.counts.queued])).toEqual([[mailbox, 30]]);
    await expectAllQueuedOnce(local.stack, env, mailbox, 30);
  });
});

describe('a mailbox that is slow, broken or throttled', () => {
  it("a look that hangs ends at its timeout, said once; the other mailbox's tick is done at once, and the next ticks leave the hung one to the drain function", async () => {
    const env = settingsFor('', {
      INBOXQ_MAILBOX: undefined,
      INBOXQ_MAILBOXES: 'hung,fine',
      INBOXQ_HUNG__MAILBOX: 'hung@company.test',
      INBOXQ_FINE__MAILBOX: 'fine@company.test',
      INBOXQ_FINE__IMAP_PORT: String(local.stack.dovecot.imapPort),
    });
    await tick(env);
    await local.stack.appendMail('hung@company.test', buildMail({ from: SENDER, to: 'hung@company.test' }));
    await local.stack.appendMail('fine@company.test', buildMail({ from: SENDER, to: 'fine@company.test' }));
    // The kept session's NOOP goes unanswered, and so does the SELECT of the session opened instead.
    local.proxy.swallow(/ NOOP\r\n$|^\S+ SELECT /, 2);
    const logs: string[] = [];
    const started = Date.now();
    const outcomes = await tick(env, logs);
    const took = Date.now() - started;
    expect(outcomes.map((o) => [o.key, o.action])).toEqual([
      ['hung', 'requested'],
      ['fine', 'drained'],
    ]);
    expect(outcomes[0]!.error?.message).toMatch(
      /The IMAP server did not answer within 10 s \[mailbox hung@company\.test\]/,
    );
    const fine = outcomes[1]!.summary!;
    expect(Date.parse(fine.startedAt) + fine.durationMs - started).toBeLessThan(3000);
    expect(took).toBeGreaterThanOrEqual(10_000);
    expect(took).toBeLessThan(15_000);

    // Demoted: the next ticks make no connection to it and send no second request this minute.
    const commands = local.proxy.commands.length;
    for (let i = 0; i < 2; i++) {
      const next = await tick(env, logs);
      expect(next.map((o) => [o.key, o.action, o.request])).toEqual([
        ['hung', 'requested', undefined],
        ['fine', 'idle', undefined],
      ]);
    }
    expect(local.proxy.commands.length).toBe(commands);
    expect(logs.filter((l) => l.includes("can't look at the mailbox"))).toHaveLength(1);
    expect(await drainRequestsFor('hung@company.test')).toHaveLength(1);

    // The drain function, on an instance of its own, drains it once the server answers.
    const run = await runQueueFunction(local.stack, env, 'drain');
    expect((run.results as DrainOutcome[]).map((o) => [o.key, o.summary?.counts.queued])).toEqual([['hung', 1]]);
  });

  it("a mailbox that can't be looked at for long sends no heartbeat (the silence alert fires for it), and inboxq status says it is stale and why", async () => {
    const app = local.stack.registerApp();
    local.stack.idp.imapRefusedApps.add(app.clientId);
    const mailbox = 'unlooked@company.test';
    const env = settingsFor(mailbox, app.settings);
    await local.stack.appendMail(mailbox, buildMail({ from: SENDER, to: mailbox }));
    const logs: string[] = [];
    for (let i = 0; i < 3; i++) expect((await tick(env, logs)).map((o) => o.action)).toEqual(['requested']);
    expect(await heartbeats(mailbox)).toBe(0);
    expect(silentMailboxes([mailbox], [], Date.now())).toEqual([mailbox]);
    expect(logs.filter((l) => l.includes("can't look at the mailbox"))).toHaveLength(1);
    // The drain function's run fails, says what to do, and records it for status.
    const run = await runQueueFunction(local.stack, env, 'drain');
    expect((run.results as DrainOutcome[])[0]!.error?.message).toContain('What to do:');
    const status = await main(['status', '--json'], env);
    expect(status.code).toBe(1);
    const problems = (JSON.parse(status.stdout) as MailboxStatus).problems;
    expect(problems).toContain('stale: no run has drained this mailbox yet');
    expect(problems.some((p) => p.startsWith("the mailbox can't be read: ImapError: IMAP login"))).toBe(true);
    expect(await local.stack.readFolder(mailbox, 'INBOX')).toHaveLength(1);
  });

  it("a run Exchange throttles for minutes is waited out: the ticks make no IMAP connection and no request until it's over", async () => {
    const mailbox = 'tick-throttled@company.test';
    const env = settingsFor(mailbox);
    await tick(env);
    await local.stack.appendMail(mailbox, buildMail({ from: SENDER, to: mailbox }));
    // The listing: it brings the small mail's source too.
    local.proxy.throttle(/FETCH 1:\*/, 300_000);
    const [throttled] = await tick(env);
    expect(throttled).toMatchObject({ action: 'drained', summary: { stoppedBecause: 'throttled' } });
    const commands = local.proxy.commands.length;
    const connections = local.proxy.connections;
    const [next] = await tick(env);
    expect([next!.action, next!.why]).toEqual(['waiting', "Exchange's back-off is not over"]);
    expect(local.proxy.commands.length).toBe(commands);
    expect(local.proxy.connections).toBe(connections);
    expect(await drainRequestsFor(mailbox)).toEqual([]);
    expect(await local.stack.readFolder(mailbox, 'INBOX')).toHaveLength(1);
  });

  it('killed in the middle of a look, the host started again drains every mail once: a look changes nothing', async () => {
    const mailbox = 'killlook@company.test';
    const env = {
      ...settingsFor(mailbox, { INBOXQ_DRAIN_SCHEDULE: '*/2 * * * * *', INBOXQ_ACKNOWLEDGE: 'false' }),
      AzureFunctionsJobHost__extensions__queues__maxPollingInterval: '00:00:01',
    };
    for (let i = 0; i < 3; i++)
      await local.stack.appendMail(mailbox, buildMail({ from: SENDER, to: mailbox, subject: `Look ${i}` }));
    // The first tick's look opens a session whose SELECT goes unanswered: the tick is in its look.
    const from = local.proxy.injected.length;
    local.proxy.swallow(/^\S+ SELECT "?INBOX/, 1);
    const options = { main: 'build/functions/*.js' };
    const first = HostProcess.start('.', env, options);
    try {
      for (const deadline = Date.now() + 30_000; Date.now() < deadline; await sleep(50))
        if (local.proxy.injected.slice(from).some((x) => x.startsWith('swallow SELECT'))) break;
      expect(local.proxy.injected.slice(from), first.output).toEqual(['swallow SELECT INBOX']);
      await first.kill();
    } finally {
      await first.kill();
    }
    expect(await local.stack.readFolder(mailbox, 'INBOX')).toHaveLength(3);
    expect(await runtimeFor(env).ledger.listMessages(mailbox)).toEqual([]);

    const second = HostProcess.start('.', env, options);
    try {
      await second.waitFor(/Drain run finished/, 30_000);
    } finally {
      await second.stop();
    }
    await expectAllQueuedOnce(local.stack, env, mailbox, 3);
  }, 90_000);
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
