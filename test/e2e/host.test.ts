/**
 * inboxq's local host, as its own process, on a small app (test/fixtures/host-app) and on inboxq
 * itself: registrations, bindings and hooks run as the Functions runtime runs them, against Azurite.
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

import { QueueClient } from '@azure/storage-queue';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import { TaskWorker } from '../../shared/worker/worker';
import { HostProcess } from '../helpers/host';
import { buildMail } from '../helpers/mail';
import { takeAllTasks } from '../helpers/stack';

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

function startHost(
  appRoot: string,
  settings: Record<string, string | undefined>,
  options: { main?: string; settingsFile?: string } = {},
): HostProcess {
  const host = HostProcess.start(appRoot, settings, options);
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

/**
 * inboxq itself on the host: the compiled app (build/functions, what package.json main names in
 * dist/), the repository's host.json, and only the timer and queue messages to move it.
 */
describe('inboxq on the local host', () => {
  const ROOT = path.resolve('.');
  const SENDER = 'alice@partner.test';
  /** An empty settings file: a developer's own local.settings.json never leaks into a test. */
  let noFile: string;
  beforeAll(() => {
    noFile = path.join(stack.dir, 'empty.settings.json');
    writeFileSync(noFile, '{ "IsEncrypted": false, "Values": {} }');
  });

  function appSettings(
    mailbox: string,
    overrides: Record<string, string> = {},
  ): Record<string, string | undefined> & { INBOXQ_TASKS_QUEUE: string } {
    return {
      INBOXQ_TASKS_QUEUE: `tasks-${mailbox.split('@')[0]}`,
      ...stack.settings(mailbox, {
        INBOXQ_AUTHORIZED_SENDERS: SENDER,
        INBOXQ_DRAIN_SCHEDULE: '*/2 * * * * *',
        INBOXQ_TASKS_QUEUE: `tasks-${mailbox.split('@')[0]}`,
      }),
      // The host's own knobs, as app settings: poll at least every second, retry a failed message after 2 s.
      AzureFunctionsJobHost__extensions__queues__maxPollingInterval: '00:00:01',
      AzureFunctionsJobHost__extensions__queues__visibilityTimeout: '00:00:02',
      ...overrides,
    };
  }
  const app = (settings: Record<string, string | undefined>) =>
    startHost(ROOT, settings, { main: 'build/functions/*.js', settingsFile: noFile });

  it("registers every function with its bindings, and the schedule drains a mail into a task that is answered in the sender's mailbox", async () => {
    const mailbox = 'onhost@company.test';
    const settings = appSettings(mailbox);
    const host = app(settings);
    await host.waitFor(/functions running/);
    for (const line of [
      'drainSchedule: timerTrigger',
      'drain: queueTrigger (drain-requests)',
      'reply: queueTrigger (replies)',
      'replyPoison: queueTrigger (replies-poison)',
    ])
      expect(host.output).toContain(line);
    expect(host.output).toContain(`inboxq: serving default (${mailbox})`);

    await stack.appendMail(
      mailbox,
      buildMail({ from: SENDER, to: mailbox, subject: 'Hosted', body: 'Please answer.' }),
    );
    const worker = TaskWorker.fromConnectionString(stack.azurite.connectionString, {
      tasksQueue: settings.INBOXQ_TASKS_QUEUE,
    });
    let received: Awaited<ReturnType<TaskWorker['receive']>> = [];
    for (const deadline = Date.now() + 30_000; received.length === 0 && Date.now() < deadline;)
      received = await worker.receive({ max: 1 }).then(async (r) => (r.length ? r : (await sleep(300), r)));
    expect(received).toHaveLength(1);
    const { task, complete } = received[0]!;
    expect(task.subject).toBe('Hosted');
    await worker.reply({ taskId: task.taskId, mailbox, markdown: 'The **answer**.' });
    await complete();

    // The acknowledgement and the answer, sent by the reply function on its queue trigger.
    let inbox = await stack.readFolder(SENDER, 'INBOX');
    for (const deadline = Date.now() + 30_000; inbox.length < 2 && Date.now() < deadline; await sleep(300))
      inbox = await stack.readFolder(SENDER, 'INBOX');
    const subjects = inbox.map((m) => /^Subject: (.*)$/m.exec(m.source.toString())?.[1] ?? '');
    expect(subjects.filter((s) => s.includes('Hosted'))).toHaveLength(2);
    expect(await stack.readFolder(mailbox, 'INBOX')).toHaveLength(0);
    expect((await host.stop()).code).toBe(0);
    expect(host.output).toMatch(/Executed 'Functions.drainSchedule' \(Succeeded/);
    // The schedule's tick drained the mail itself: no second function on its way to a task.
    expect(host.output).not.toMatch(/Executing 'Functions.drain'/);
    expect(host.output).toMatch(/Executed 'Functions.reply' \(Succeeded/);
  });

  it('the appStart hook reports invalid settings, naming them, at start', async () => {
    const host = app(appSettings('badsettings@company.test', { INBOXQ_TENANT_ID: 'common' }));
    await host.waitFor(/inboxq: .*Invalid settings: INBOXQ_TENANT_ID must be your tenant id/);
    await host.stop();
  });

  it('killed mid-drain, then started again: every mail becomes one task, none is lost', async () => {
    const mailbox = 'killdrain@company.test';
    // A 30 s run lease: the run the kill interrupts holds the mailbox that long at most. Runs of 10
    // mails, and the kill sent the moment the first task is logged: the rest of that run's batch
    // takes milliseconds, so a kill sent later (a poll of the output) can land after the run.
    const settings = appSettings(mailbox, {
      INBOXQ_DRAIN_LEASE_SECONDS: '30',
      INBOXQ_MAX_MESSAGES_PER_RUN: '10',
      LOCALHOST_QUEUE_VISIBILITY_SECONDS: '5',
    });
    for (let i = 0; i < 40; i++)
      await stack.appendMail(mailbox, buildMail({ from: SENDER, to: mailbox, subject: `Mail ${i}` }));
    const first = app(settings);
    await first.killOn(/Mail queued as a task/);
    // Killed inside the run: its batch is claimed and its mail not yet removed.
    expect((await runtimeFor(settings).ledger.listMessages(mailbox)).some((r) => !r.removed)).toBe(true);
    expect((await stack.readFolder(mailbox, 'INBOX')).length).toBeGreaterThan(0);

    const second = app(settings);
    let left = await stack.readFolder(mailbox, 'INBOX');
    for (const deadline = Date.now() + 60_000; left.length > 0 && Date.now() < deadline; await sleep(500))
      left = await stack.readFolder(mailbox, 'INBOX');
    await second.stop();
    expect(left).toHaveLength(0);
    const rows = await runtimeFor(settings).ledger.listMessages(mailbox);
    expect(rows).toHaveLength(40);
    expect(rows.every((r) => r.state === 'queued' && r.removed)).toBe(true);
    const tasks = await takeAllTasks(stack, settings.INBOXQ_TASKS_QUEUE);
    // At least once on the queue, once per task id: a task queued twice carries the same id.
    expect(new Set(tasks.map((t) => t.taskId)).size).toBe(40);
    expect(new Set(tasks.map((t) => t.taskId))).toEqual(new Set(rows.map((r) => r.taskId)));
  }, 120_000);

  it('killed mid-reply, then started again: the answer arrives once', async () => {
    const mailbox = 'killreply@company.test';
    const sender = 'bob@partner.test';
    const settings = appSettings(mailbox, {
      INBOXQ_AUTHORIZED_SENDERS: sender,
      INBOXQ_ACKNOWLEDGE: 'false',
      INBOXQ_REPLY_LEASE_SECONDS: '10',
      LOCALHOST_QUEUE_VISIBILITY_SECONDS: '5',
    });
    await stack.appendMail(mailbox, buildMail({ from: sender, to: mailbox, subject: 'Kill the reply' }));
    const first = app(settings);
    const worker = TaskWorker.fromConnectionString(stack.azurite.connectionString, {
      tasksQueue: settings.INBOXQ_TASKS_QUEUE,
    });
    let received: Awaited<ReturnType<TaskWorker['receive']>> = [];
    for (const deadline = Date.now() + 30_000; received.length === 0 && Date.now() < deadline; await sleep(300))
      received = await worker.receive({ max: 1 });
    const { task } = received[0]!;
    await worker.reply({ taskId: task.taskId, mailbox, text: 'Sent once.' });
    await first.waitFor(/Executing 'Functions.reply'/);
    await first.kill();

    const second = app(settings);
    let inbox = await stack.readFolder(sender, 'INBOX');
    for (const deadline = Date.now() + 60_000; inbox.length === 0 && Date.now() < deadline; await sleep(500))
      inbox = await stack.readFolder(sender, 'INBOX');
    // Long enough for any second copy: past the reply lease and a redelivery.
    await sleep(12_000);
    await second.stop();
    inbox = await stack.readFolder(sender, 'INBOX');
    expect(inbox).toHaveLength(1);
    expect(inbox[0]!.source.toString()).toContain('Sent once.');
  }, 120_000);
});

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

describe('npm run stack and npm start', () => {
  it('the stack seeds a mail and writes the settings; the host, started on them, puts its task on the tasks queue; both stop on SIGTERM', async () => {
    const out = path.join(stack.dir, 'stack.settings.json');
    const child = spawn(process.execPath, [path.resolve('build/scripts/stack.js'), '--seed', '--out', out], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { PATH: process.env['PATH'], HOME: process.env['HOME'] },
    });
    let said = '';
    child.stdout.on('data', (c: Buffer) => (said += c.toString()));
    child.stderr.on('data', (c: Buffer) => (said += c.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    try {
      for (const deadline = Date.now() + 60_000; !said.includes('seeded') && Date.now() < deadline; await sleep(200));
      expect(said).toContain(`wrote ${path.relative(path.resolve('.'), out)}`);
      const values = (JSON.parse(readFileSync(out, 'utf8')) as { Values: Record<string, string> }).Values;
      expect(values['INBOXQ_DRAIN_SCHEDULE']).toBe('*/10 * * * * *');

      const host = HostProcess.start(
        path.resolve('.'),
        {},
        {
          main: 'build/functions/*.js',
          settingsFile: out,
          inheritEnv: false,
        },
      );
      hosts.push(host);
      await host.waitFor(/Mail queued as a task/, 60_000);
      const tasks = new QueueClient(values['AzureWebJobsStorage']!, 'tasks');
      const { peekedMessageItems } = await tasks.peekMessages({ numberOfMessages: 5 });
      expect(peekedMessageItems).toHaveLength(1);
      // The operator's view of it, as `npm run inboxq:local -- trace …` gives it.
      const trace = spawnSync(
        process.execPath,
        [path.resolve('build/scripts/local-cli.js'), 'trace', 'alice@fabrikam.test', '--stack', out],
        { encoding: 'utf8', env: { PATH: process.env['PATH'], HOME: process.env['HOME'] } },
      );
      expect(trace.stderr).toBe('');
      expect(trace.status).toBe(0);
      expect(trace.stdout).toMatch(/agent@contoso\.test {2}task [0-9a-f]{32} {2}accepted/);
      expect(trace.stdout).toContain('queued on tasks in conversation');
      expect((await host.stop()).code).toBe(0);
    } finally {
      child.kill('SIGTERM');
    }
    expect(await exited).toBe(0);
    expect(said).toContain('local stack: SIGTERM, stopping');
  }, 120_000);
});

describe('timers after a pause', () => {
  it('an occurrence that fires late (the process was stopped) is past due, and missed ones are not replayed', async () => {
    const host = startHost(FIXTURE, fixtureSettings({ TICK_SCHEDULE: '*/1 * * * * *' }));
    await host.waitFor(/tick isPastDue=false/);
    await queue('ticks').clearMessages();
    // Stopped between two invocations. Stopped in the middle of one (the tick's queue send), the
    // process resumes with the late occurrence's timer before the send's answer, so that occurrence
    // comes while the last one still runs and is skipped, by design, instead of running late.
    await host.waitFor(/Executed 'Functions\.tick'/, 30_000, host.output.length);
    host.child.kill('SIGSTOP');
    await sleep(3500);
    host.child.kill('SIGCONT');
    await host.waitFor(/tick isPastDue=true/);
    await sleep(1500);
    await host.stop();
    const ticks = (await receiveAll('ticks', 1)) as { isPastDue: boolean }[];
    // Three occurrences fell in the pause: one late run for them, not three.
    expect(ticks.filter((t) => t.isPastDue)).toHaveLength(1);
    expect(ticks.filter((t) => !t.isPastDue).length).toBeGreaterThanOrEqual(1);
  });
});
