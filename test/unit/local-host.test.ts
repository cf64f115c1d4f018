/** The local host's pure parts: settings precedence, %SETTING%, host.json and its overrides, NCRONTAB. */
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import {
  HostStartError,
  loadAppSettings,
  parseTimeSpan,
  readHostJson,
  resolveSetting,
} from '../../localstack/host/settings';
import { ncrontabProblem, TimerTrigger } from '../../localstack/host/timer-trigger';

function appDir(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'inboxq-host-unit-'));
  for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text);
  return dir;
}

describe('app settings', () => {
  it('take local.settings.json Values, with the environment winning, as func start does', () => {
    const dir = appDir({
      'local.settings.json': JSON.stringify({ IsEncrypted: false, Values: { A: 'file', B: 'file', N: 5 } }),
    });
    const settings = loadAppSettings(dir, { B: 'env', C: 'env' });
    expect(settings).toMatchObject({ A: 'file', B: 'env', C: 'env' });
    expect(settings['N']).toBeUndefined();
  });

  it('null for the file reads none: a local.settings.json in the folder is not read', () => {
    const dir = appDir({ 'local.settings.json': JSON.stringify({ Values: { A: 'file' } }) });
    expect(loadAppSettings(dir, { B: 'env' }, null)).toEqual({ B: 'env' });
  });

  it('a settings file named but missing, or not JSON, is refused', () => {
    const dir = appDir({ 'bad.json': '{ "Values": ' });
    expect(() => loadAppSettings(dir, {}, path.join(dir, 'none.json'))).toThrow(HostStartError);
    expect(() => loadAppSettings(dir, {}, path.join(dir, 'bad.json'))).toThrow('is not valid JSON');
  });

  it('%NAME% resolves from the settings; an unset or empty one is the host error', () => {
    expect(resolveSetting('%Q%', { Q: 'tasks' })).toBe('tasks');
    expect(resolveSetting('tasks-%K%-x', { K: 'sales' })).toBe('tasks-sales-x');
    expect(() => resolveSetting('%Q%', {})).toThrow("'%Q%' does not resolve to a value.");
    expect(() => resolveSetting('%Q%', { Q: '' })).toThrow("'%Q%' does not resolve to a value.");
  });
});

describe('host.json', () => {
  const hostJson = JSON.stringify({
    version: '2.0',
    extensions: {
      queues: { batchSize: 8, maxDequeueCount: 5, visibilityTimeout: '00:00:30', maxPollingInterval: '00:00:10' },
    },
  });

  it('gives the queue rules, with the host defaults for what it leaves out', () => {
    expect(readHostJson(appDir({ 'host.json': hostJson }), {}).queues).toEqual({
      batchSize: 8,
      newBatchThreshold: 4,
      maxDequeueCount: 5,
      visibilityTimeoutMs: 30_000,
      maxPollingIntervalMs: 10_000,
      messageEncoding: 'base64',
    });
  });

  it('AzureFunctionsJobHost__ settings override it, names case-insensitive', () => {
    const q = readHostJson(appDir({ 'host.json': hostJson }), {
      AzureFunctionsJobHost__extensions__queues__visibilityTimeout: '00:00:02',
      azurefunctionsjobhost__Extensions__Queues__MaxDequeueCount: '3',
    }).queues;
    expect([q.visibilityTimeoutMs, q.maxDequeueCount]).toEqual([2000, 3]);
  });

  it('refuses a messageEncoding the host does not know', () => {
    const dir = appDir({ 'host.json': JSON.stringify({ extensions: { queues: { messageEncoding: 'utf16' } } }) });
    expect(() => readHostJson(dir, {})).toThrow('messageEncoding must be base64 or none');
  });

  it.each([
    ['00:00:30', 30_000],
    ['01:02:03', 3_723_000],
    ['1.00:00:00', 86_400_000],
    ['00:00:00.5', 500],
  ])('time span %s is %d ms', (span, ms) => expect(parseTimeSpan(span, 'x')).toBe(ms));

  it('a time span that is not one is refused, naming the setting', () => {
    expect(() => parseTimeSpan('30s', 'visibilityTimeout')).toThrow("visibilityTimeout: '30s' is not a time span");
  });
});

describe('NCRONTAB', () => {
  it.each([
    ['0 */2 * * * *', undefined],
    ['*/10 * * * * *', undefined],
    ['0 0 8-18 * * Mon-Fri', undefined],
    ['*/5 * * * *', 'was not found to be a valid CRON expression'],
    ['every minute', 'was not found to be a valid CRON expression'],
  ])('%s', (expression, problem) => {
    const found = ncrontabProblem(expression);
    if (problem === undefined) expect(found).toBeUndefined();
    else expect(found).toContain(problem);
  });

  it('the next occurrence is in UTC, seconds first', () => {
    const t = new TimerTrigger({
      functionName: 't',
      bindingName: 'timer',
      schedule: '30 15 9 * * *',
      runOnStartup: false,
      invoke: () => Promise.reject(new Error('not called')),
      log: () => undefined,
    });
    expect(t.next(Date.parse('2026-11-27T09:15:00Z')).toISOString()).toBe('2026-11-27T09:15:30.000Z');
    expect(t.next(Date.parse('2026-11-27T09:15:30Z')).toISOString()).toBe('2026-11-28T09:15:30.000Z');
  });
});
