/**
 * Tokens and secrets through the real MSAL and SecretClient code paths, counted at the local
 * identity provider and vault.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalStack } from '../../localstack';
import { peekClaims } from '../../shared/credentials/token';
import { runtimeFor } from '../../shared/host/runtime';
import { context, handlersFor, timer } from '../helpers/stack';

let stack: LocalStack;
beforeAll(async () => {
  stack = await LocalStack.start();
});
afterAll(async () => {
  await stack?.stop();
});

const exchangeTokensFor = (clientId: string) => stack.idp.requests.filter((r) => r.clientId === clientId && r.scope.startsWith('https://outlook.office365.com')).length;

describe('app-only tokens', () => {
  it('concurrent first callers share one token request, and one Key Vault read', async () => {
    const app = stack.registerApp();
    const rt = runtimeFor(stack.settings('concurrent@company.test', app.settings));
    const readsBefore = stack.vault.reads.filter((n) => n === app.secretName).length;
    const tokens = await Promise.all(Array.from({ length: 10 }, () => rt.tokens.getToken()));
    expect(new Set(tokens.map((t) => t.token)).size).toBe(1);
    expect(exchangeTokensFor(app.clientId)).toBe(1);
    expect(stack.vault.reads.filter((n) => n === app.secretName).length - readsBefore).toBe(1);
  });

  it('warm invocations reuse the cached token; it is renewed once it nears expiry', async () => {
    const app = stack.registerApp();
    const env = stack.settings('warm@company.test', app.settings);
    const handlers = handlersFor(env);
    for (let i = 0; i < 5; i++) await handlers.drain(timer(), context('drain', []));
    expect(exchangeTokensFor(app.clientId)).toBe(1);

    // A token with less than MSAL's 5-minute margin left is renewed before use.
    const short = stack.registerApp();
    stack.idp.tokenLifetimeSeconds = 240;
    try {
      const rt = runtimeFor(stack.settings('short@company.test', short.settings));
      await rt.tokens.getToken();
      await rt.tokens.getToken();
      expect(exchangeTokensFor(short.clientId)).toBe(2);
    } finally {
      stack.idp.tokenLifetimeSeconds = 3600;
    }
  });

  it('the token carries the Exchange audience and the app roles the servers check', async () => {
    const rt = runtimeFor(stack.settings('claims@company.test'));
    const claims = peekClaims((await rt.tokens.getToken()).token);
    expect(claims).toMatchObject({ aud: 'https://outlook.office365.com', iss: stack.idp.issuer, tid: stack.idp.tenantId, roles: ['IMAP.AccessAsApp', 'SMTP.SendAsApp'] });
  });
});
