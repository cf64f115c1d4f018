/**
 * The azd files, the Bicep and the code agree: every Bicep parameter is mapped in
 * main.parameters.json and back, the service azure.yaml deploys is the one the Bicep tags, and
 * every app setting the Bicep writes is one inboxq reads. (CI compiles and lints the Bicep itself.)
 */
import { readFileSync } from 'node:fs';

import { describe, expect, it } from 'vitest';

import { SETTING_NAMES } from '../../shared/config/schema';
import {
  DRAIN_REQUESTS_QUEUE,
  MAIL_CONTAINER,
  mailboxResources,
  REPLIES_QUEUE,
  TASKS_QUEUE,
  WORKER_DONE_TABLE,
} from '../../shared/contract/messages';
import { CONVERSATIONS_TABLE } from '../../shared/conversation/conversations';
import { KEYS_TABLE } from '../../shared/identity/task-key';
import { MAILBOXES_TABLE, MESSAGES_TABLE, REPLIES_TABLE } from '../../shared/ledger/rows';
import { METRIC_NAMES } from '../../shared/telemetry/metrics';

const main = readFileSync('infra/main.bicep', 'utf8');
const functionBicep = readFileSync('infra/app/function.bicep', 'utf8');
const parameters = JSON.parse(readFileSync('infra/main.parameters.json', 'utf8')) as {
  parameters: Record<string, { value: string }>;
};
const azureYaml = readFileSync('azure.yaml', 'utf8');

describe('infra', () => {
  it('maps every Bicep parameter in main.parameters.json, and nothing else', () => {
    const declared = [...main.matchAll(/^param (\w+)/gm)].map((m) => m[1]).sort();
    expect(Object.keys(parameters.parameters).sort()).toEqual(declared);
  });

  it('is a subscription-scope deployment named from one resource token', () => {
    expect(main).toContain("targetScope = 'subscription'");
    expect(main).toContain('uniqueString(subscription().id, environmentName, location)');
  });

  it('deploys the service azure.yaml names, as a TypeScript function app', () => {
    const service = /services:\n\s+(\w+):\n\s+project: \.\n\s+language: ts\n\s+host: function/.exec(azureYaml)?.[1];
    expect(service).toBe('inboxq');
    expect(functionBicep).toContain(`'azd-service-name': '${service}'`);
  });

  it('writes only settings inboxq reads (the INBOXQ_* ones)', () => {
    const block = main.slice(
      main.indexOf('var inboxqSettings = {'),
      main.indexOf('}', main.indexOf('var inboxqSettings = {')),
    );
    const written = [...block.matchAll(/^\s+(INBOXQ_\w+):/gm)].map((m) => m[1]!);
    expect(written.length).toBeGreaterThan(5);
    // One mailbox, or several with their per-mailbox settings from extraSettings.
    const union =
      /inboxqSettings: union\(inboxqSettings, empty\(mailboxKeys\) \? \{ (INBOXQ_\w+): mailbox \} : \{ (INBOXQ_\w+): join\(mailboxKeys, ','\) \}, extraSettings\)/.exec(
        main,
      );
    expect(union?.slice(1)).toEqual(['INBOXQ_MAILBOX', 'INBOXQ_MAILBOXES']);
    for (const name of [...written, ...union!.slice(1)]) expect(SETTING_NAMES, name).toContain(name);
    // And the ones the function module writes beside the platform's.
    const platform = [...functionBicep.matchAll(/^\s+(INBOXQ_\w+):/gm)].map((m) => m[1]!);
    expect(platform).toContain('INBOXQ_MANAGED_IDENTITY_CLIENT_ID');
    for (const name of platform) expect(SETTING_NAMES, name).toContain(name);
  });

  it('provisions the queues, tables and container the code uses, with identity-based connections only', () => {
    for (const name of [
      DRAIN_REQUESTS_QUEUE,
      TASKS_QUEUE,
      REPLIES_QUEUE,
      `${REPLIES_QUEUE}-poison`,
      MESSAGES_TABLE,
      REPLIES_TABLE,
      MAILBOXES_TABLE,
      CONVERSATIONS_TABLE,
      WORKER_DONE_TABLE,
      KEYS_TABLE,
    ]) {
      expect(main).toContain(`'${name}'`);
    }
    // With several mailboxes, each one's own resources, named as the code names them.
    const own = mailboxResources('KEY');
    expect(main).toContain(`tasksQueue: '${own.tasksQueue.replace('KEY', '${key}')}'`);
    expect(main).toContain(`repliesQueue: '${own.repliesQueue.replace('KEY', '${key}')}'`);
    expect(main).toContain(
      `container: '${own.container.replace(MAIL_CONTAINER, '${mailContainer}').replace('KEY', '${key}')}'`,
    );
    expect(main).toContain(`doneTable: '${own.workerDoneTable.replace('KEY', '${key}')}'`);
    expect(main).toContain("'${m.repliesQueue}-poison'");
    expect(main).toContain(`var mailContainer = '${MAIL_CONTAINER}'`);
    expect(functionBicep).toContain("AzureWebJobsStorage__credential: 'managedidentity'");
    expect(readFileSync('infra/core/storage/storage.bicep', 'utf8')).toContain('allowSharedKeyAccess: false');
    expect(`${main}${functionBicep}`).not.toMatch(/AccountKey=|listKeys\(/);
  });

  it('runs Node.js 22 on Flex Consumption', () => {
    expect(functionBicep).toMatch(/name: 'FC1'\s+tier: 'FlexConsumption'/);
    expect(functionBicep).toMatch(/runtime: \{\s+name: 'node'\s+version: '22'/);
  });
});

describe('alerts', () => {
  const observability = readFileSync('infra/app/observability.bicep', 'utf8');
  const start = observability.indexOf('var alerts = [');
  const block = observability.slice(start, observability.indexOf('\n]\n', start));
  const queries = [...block.matchAll(/^\s+query: (.+)$/gm)].map((m) => m[1]!);

  it('each counts one of the metrics inboxq emits, never the traces host.json samples', () => {
    expect(queries.length).toBe(5);
    const names = Object.values(METRIC_NAMES) as string[];
    for (const query of queries) {
      expect(query).not.toMatch(/\btraces\b/);
      if (query === 'silenceQuery') continue;
      const metric = /name == "([\w.]+)"/.exec(query)?.[1];
      expect(names, query).toContain(metric);
    }
  });

  it('notify the action group made for alertEmails and any given one', () => {
    expect(observability).toContain('actionGroups: actionGroups');
    expect(observability).toMatch(/emailReceivers: \[\s+for \(address, i\) in emails/);
  });
});
