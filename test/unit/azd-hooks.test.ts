/**
 * scripts/azd-hooks.sh, the preprovision and postdown hooks of azure.yaml, run as azd runs them
 * (the environment's values as environment variables). azd itself can't be installed here: a
 * stand-in `azd` on PATH records each `azd env set`. What the Bicep makes of INBOXQ_APP_SETTINGS is
 * checked by scripts/deploy-check.ts on the evaluated template.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

const HOOKS = path.resolve('scripts/azd-hooks.sh');
const dir = mkdtempSync(path.join(tmpdir(), 'inboxq-azd-hooks-'));
const calls = path.join(dir, 'calls');
writeFileSync(path.join(dir, 'azd'), `#!/bin/sh\nprintf '%s\\n' "$*" >> "${calls}"\n`);
chmodSync(path.join(dir, 'azd'), 0o755);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function hook(name: string, env: Record<string, string>) {
  writeFileSync(calls, '');
  const run = spawnSync('sh', [HOOKS, name], {
    env: { PATH: `${dir}:${process.env['PATH']}`, ...env },
    encoding: 'utf8',
  });
  const sets = Object.fromEntries(
    readFileSync(calls, 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => {
        const m = /^env set (\S+) ?(.*)$/.exec(line);
        if (!m) throw new Error(`unexpected azd call: ${line}`);
        return [m[1]!, m[2]!];
      }),
  );
  return { status: run.status, out: run.stdout + run.stderr, sets };
}

describe('the preprovision hook', () => {
  it('gives a new deployment a vault suffix of its own and builds the app settings from the per-mailbox values, names only in its output', () => {
    const { status, out, sets } = hook('preprovision', {
      INBOXQ_MAILBOXES: 'sales,support',
      INBOXQ_SUPPORT__AUTHORIZED_SENDERS: 'a@x.com,*@y.com',
      INBOXQ_SALES__MAILBOX: 'sales@contoso.com',
      INBOXQ_SUPPORT__MAILBOX: 'support@contoso.com',
      INBOXQ_CLIENT_ID: '55555555-5555-4555-8555-555555555555',
    });
    expect(status).toBe(0);
    expect(sets['INBOXQ_VAULT_SUFFIX']).toMatch(/^[0-9a-f]{6}$/);
    expect(sets['INBOXQ_APP_SETTINGS']).toBe(
      'INBOXQ_SALES__MAILBOX=sales@contoso.com;INBOXQ_SUPPORT__AUTHORIZED_SENDERS=a@x.com,*@y.com;INBOXQ_SUPPORT__MAILBOX=support@contoso.com',
    );
    expect(out).toContain('INBOXQ_SALES__MAILBOX');
    expect(out).not.toContain('sales@contoso.com');
  });

  it('keeps the vault of a deployment made before the suffix, and a suffix already chosen', () => {
    expect(hook('preprovision', { AZURE_KEY_VAULT_NAME: 'kv-abcdefghijklmnopqr' }).sets).toEqual({
      INBOXQ_APP_SETTINGS: '',
    });
    expect(hook('preprovision', { INBOXQ_VAULT_SUFFIX: 'a1b2c3' }).sets['INBOXQ_VAULT_SUFFIX']).toBeUndefined();
  });

  it('adds INBOXQ_EXTRA_SETTINGS, and clears the settings when no per-mailbox value is left', () => {
    const { sets } = hook('preprovision', {
      INBOXQ_VAULT_SUFFIX: 'a1b2c3',
      INBOXQ_SALES__MAILBOX: 'sales@contoso.com',
      INBOXQ_EXTRA_SETTINGS: 'INBOXQ_MAILBOX_RETENTION_DAYS=60;INBOXQ_ACKNOWLEDGE=false',
    });
    expect(sets['INBOXQ_APP_SETTINGS']).toBe(
      'INBOXQ_SALES__MAILBOX=sales@contoso.com;INBOXQ_MAILBOX_RETENTION_DAYS=60;INBOXQ_ACKNOWLEDGE=false',
    );
    expect(hook('preprovision', { INBOXQ_VAULT_SUFFIX: 'a1b2c3' }).sets).toEqual({ INBOXQ_APP_SETTINGS: '' });
  });

  it("refuses a value with a ';' (the separator), naming the setting and not its value, and sets nothing", () => {
    const { status, out, sets } = hook('preprovision', {
      INBOXQ_VAULT_SUFFIX: 'a1b2c3',
      INBOXQ_SALES__AUTHORIZED_SENDERS: 'a@x.com;b@y.com',
    });
    expect(status).toBe(1);
    expect(out).toContain("INBOXQ_SALES__AUTHORIZED_SENDERS holds a ';'");
    expect(out).not.toContain('a@x.com');
    expect(sets).toEqual({});
  });
});

describe('the postdown hook', () => {
  it('chooses a new vault suffix, so the next provision does not meet the deleted vault', () => {
    const { status, sets } = hook('postdown', { INBOXQ_VAULT_SUFFIX: 'a1b2c3' });
    expect(status).toBe(0);
    expect(sets['INBOXQ_VAULT_SUFFIX']).toMatch(/^[0-9a-f]{6}$/);
    expect(sets['INBOXQ_VAULT_SUFFIX']).not.toBe('a1b2c3');
  });

  it('refuses an unknown hook', () => {
    expect(hook('predeploy', {}).status).toBe(2);
  });
});
