/**
 * inboxq's local host, as its own process, on a small app (test/fixtures/host-app) and on inboxq
 * itself: registrations, bindings and hooks run as the Functions runtime runs them, against Azurite.
 */
import path from 'node:path';

import { QueueClient } from '@azure/storage-queue';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { HostProcess } from '../helpers/host';

const FIXTURE = path.resolve('test/fixtures/host-app');

let stack: LocalStack;
const hosts: HostProcess[] = [];
beforeAll(async () => {
  stack = await LocalStack.start();
});
afterAll(async () => {
  await Promise.all(hosts.map((h) => h.kill()));
  await stack?.stop();
});

function queue(name: string): QueueClient {
  return new QueueClient(stack.azurite.connectionString, name);
}
async function send(name: string, body: unknown): Promise<void> {
  const q = queue(name);
  await q.createIfNotExists();
  await q.sendMessage(Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)).toString('base64'));
}
async function receiveAll(name: string, atLeast: number, timeoutMs = 20_000): Promise<unknown[]> {
  const q = queue(name);
  await q.createIfNotExists();
  const out: unknown[] = [];
  const deadline = Date.now() + timeoutMs;
  while (out.length < atLeast && Date.now() < deadline) {
    const { receivedMessageItems } = await q.receiveMessages({ numberOfMessages: 32 });
    for (const m of receivedMessageItems) {
      out.push(JSON.parse(Buffer.from(m.messageText, 'base64').toString('utf8')));
      await q.deleteMessage(m.messageId, m.popReceipt);
    }
    if (out.length < atLeast) await new Promise((r) => setTimeout(r, 200));
  }
  return out;
}

function fixtureSettings(overrides: Record<string, string | undefined> = {}) {
  return {
    AzureWebJobsStorage: stack.azurite.connectionString,
    ECHO_QUEUE: 'echo-in',
    FAIL_QUEUE: 'fails',
    TICK_SCHEDULE: '*/1 * * * * *',
    ...overrides,
  };
}

function startHost(appRoot: string, settings: Record<string, string | undefined>, main?: string): HostProcess {
  const host = HostProcess.start(appRoot, settings, main);
  hosts.push(host);
  return host;
}

describe('the local host on a small app', () => {
  it('loads package.json main, runs appStart, and invokes a queue trigger with the metadata the host sends, its output sent', async () => {
    const host = startHost(FIXTURE, fixtureSettings({ TICK_SCHEDULE: '0 0 0 1 1 *' }));
    await host.waitFor(/3 functions running/);
    expect(host.output).toContain('hook appStart');
    await send('echo-in', { hello: 'world' });
    const [echoed] = (await receiveAll('echoed', 1)) as {
      message: unknown;
      triggerMetadata: Record<string, unknown>;
    }[];
    expect(echoed!.message).toEqual({ hello: 'world' });
    const meta = echoed!.triggerMetadata;
    expect(meta['dequeueCount']).toBe(1);
    expect(typeof meta['id']).toBe('string');
    expect(typeof meta['popReceipt']).toBe('string');
    for (const key of ['insertionTime', 'expirationTime', 'nextVisibleTime'])
      expect(Number.isNaN(Date.parse(String(meta[key]))), key).toBe(false);
    await host.waitFor(/hook postInvocation echo pre=true error=no/);
    expect(host.output).toContain('hook preInvocation echo');
    const exit = await host.stop();
    expect(exit.code).toBe(0);
    expect(host.output).toContain('hook appTerminate startedAt=number');
  });

  it('a handler that throws on every delivery: deliveries 1..5, then the message is in <queue>-poison', async () => {
    const host = startHost(FIXTURE, fixtureSettings({ FAIL_QUEUE: 'fails-a', TICK_SCHEDULE: '0 0 0 1 1 *' }));
    await host.waitFor(/functions running/);
    await send('fails-a', { n: 1 });
    await host.waitFor(/Moving message to queue 'fails-a-poison'/);
    const deliveries = [...host.output.matchAll(/alwaysFails: delivery (\d+)/g)].map((m) => Number(m[1]));
    expect(deliveries).toEqual([1, 2, 3, 4, 5]);
    expect(await receiveAll('fails-a-poison', 1)).toEqual([{ n: 1 }]);
    const { receivedMessageItems } = await queue('fails-a').receiveMessages();
    expect(receivedMessageItems).toHaveLength(0);
    await host.stop();
  });

  it('a timer on %TICK_SCHEDULE% fires every second, one at a time, and its return value goes to its queue output', async () => {
    const host = startHost(FIXTURE, fixtureSettings({ TICK_SCHEDULE: '*/1 * * * * *' }));
    const ticks = (await receiveAll('ticks', 3)) as { at: string; isPastDue: boolean; scheduleStatus: unknown }[];
    await host.stop();
    expect(ticks.length).toBeGreaterThanOrEqual(3);
    expect(ticks.every((t) => t.isPastDue === false)).toBe(true);
    expect(ticks[1]!.scheduleStatus).toMatchObject({ last: expect.any(String), next: expect.any(String) });
  });

  it.each([
    ['an unresolvable %SETTING%', { FAIL_QUEUE: undefined }, "'%FAIL_QUEUE%' does not resolve to a value"],
    ['a wrong queue name', { FAIL_QUEUE: 'Not_A_Queue' }, "Invalid queue name: 'Not_A_Queue'"],
    [
      'an unset connection',
      { AzureWebJobsStorage: undefined },
      "Storage account connection string 'AzureWebJobsStorage' does not exist",
    ],
    ['a schedule that is not NCRONTAB', { TICK_SCHEDULE: '*/5 * * * *' }, "The schedule expression '*/5 * * * *'"],
  ])('%s is refused at start, naming it', async (_what, overrides, message) => {
    const settings = fixtureSettings(overrides);
    const env = Object.fromEntries(Object.entries(settings).filter(([, v]) => v !== undefined));
    // An unset setting must not come from the test runner's own environment either.
    for (const [k, v] of Object.entries(overrides)) if (v === undefined) env[k] = '';
    const host = startHost(FIXTURE, env);
    const exit = await host.exited;
    expect(exit.code).toBe(1);
    expect(host.output).toContain(message);
    expect(host.output).toMatch(/The '\w+' function is in error|Missing value for AzureWebJobsStorage/);
  });
});
