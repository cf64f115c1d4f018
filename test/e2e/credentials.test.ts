/**
 * Tokens and secrets through the real MSAL and SecretClient code paths, counted at the local
 * identity provider and vault.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalStack } from '../../localstack';
import { runtimeFor } from '../../localstack/runtime';
import { peekClaims } from '../../shared/credentials/token';
import { type TokenError } from '../../shared/errors';
import { buildMail } from '../helpers/mail';
import { drainNow } from '../helpers/stack';

let stack: LocalStack;
beforeAll(async () => {
  stack = await LocalStack.start();
});
afterAll(async () => {
  await stack?.stop();
});

const exchangeTokensFor = (clientId: string) =>
  stack.idp.requests.filter((r) => r.clientId === clientId && r.scope.startsWith('https://outlook.office365.com'))
    .length;

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
    // No session kept between ticks: each of the five logs in to IMAP, each with a token.
    const env = stack.settings('warm@company.test', { ...app.settings, INBOXQ_IMAP_KEEP_WARM_SECONDS: '0' });
    for (let i = 0; i < 5; i++) {
      await stack.appendMail('warm@company.test', buildMail({ from: 'a@partner.test', to: 'warm@company.test' }));
      await drainNow(stack, env);
    }
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
    expect(claims).toMatchObject({
      aud: 'https://outlook.office365.com',
      iss: stack.idp.issuer,
      tid: stack.idp.tenantId,
      roles: ['IMAP.AccessAsApp', 'SMTP.SendAsApp'],
    });
  });
});

describe('the three credential types', () => {
  async function drainWith(mailbox: string, settings: Record<string, string>) {
    await stack.appendMail(mailbox, buildMail({ from: 'a@partner.test', to: mailbox }));
    return drainNow(stack, stack.settings(mailbox, { INBOXQ_AUTHORIZED_SENDERS: '*@partner.test', ...settings }));
  }

  it('a client secret from Key Vault', async () => {
    const app = stack.registerApp();
    expect((await drainWith('cred-secret@company.test', app.settings))?.counts.queued).toBe(1);
    expect(stack.idp.requests.filter((r) => r.clientId === app.clientId && r.outcome === 'issued')).toHaveLength(1);
  });

  it('a certificate from Key Vault (MSAL clientCertificate)', async () => {
    const app = stack.registerCertificateApp();
    expect((await drainWith('cred-cert@company.test', app.settings))?.counts.queued).toBe(1);
    expect(stack.vault.reads).toContain(app.certificateName);
    expect(stack.idp.requests.filter((r) => r.clientId === app.clientId && r.outcome === 'issued')).toHaveLength(1);
  });

  it('a certificate the app registration does not know is refused with AADSTS700027 and what to do', async () => {
    const app = stack.registerCertificateApp();
    const other = stack.registerCertificateApp();
    const err = await drainWith('cred-cert-wrong@company.test', {
      ...app.settings,
      INBOXQ_CLIENT_CERTIFICATE_NAME: other.certificateName,
    }).catch((e: Error) => e);
    // Thrown by the app as the host loaded it (compiled): checked by name and code, not by class identity.
    expect(err).toMatchObject({ name: 'TokenError', code: 'TOKEN' });
    expect((err as TokenError).aadsts).toBe('AADSTS700027');
    expect((err as Error).message).toContain('is not registered on the app registration');
  });

  it('secretless: the managed identity as a federated credential (MSAL client assertion)', async () => {
    const app = stack.registerFederatedApp();
    expect((await drainWith('cred-mi@company.test', app.settings))?.counts.queued).toBe(1);
    expect(stack.idp.requests.filter((r) => r.clientId === app.clientId && r.outcome === 'issued')).toHaveLength(1);
  });

  it('secretless without the federated credential: AADSTS70021 and the az command that adds it', async () => {
    const app = stack.registerFederatedApp({ federated: false });
    const err = await drainWith('cred-mi-missing@company.test', app.settings).catch((e: Error) => e);
    // Thrown by the app as the host loaded it (compiled): checked by name and code, not by class identity.
    expect(err).toMatchObject({ name: 'TokenError', code: 'TOKEN' });
    expect((err as TokenError).aadsts).toBe('AADSTS70021');
    expect((err as Error).message).toContain(`az ad app federated-credential create --id ${app.clientId}`);
    // Issuer and subject from the managed identity's own token: its tenant (the deployment's), not
    // the mailbox's INBOXQ_TENANT_ID, which may be another.
    const hint = (err as TokenError).hint ?? '';
    expect(hint).toContain(`"issuer":"${stack.idp.federationIssuer}"`);
    expect(hint).toContain(`"subject":"${stack.managedIdentity.principalId}"`);
    expect(stack.idp.federationIssuer).toContain(stack.idp.identityTenantId);
    expect(hint).not.toContain(stack.idp.tenantId);
  });
});

describe('secret rotation', () => {
  it('when Entra answers invalid_client for the cached secret, the latest vault version is read and the client rebuilt, once', async () => {
    const app = stack.registerApp();
    const rt = runtimeFor(stack.settings('rotation@company.test', app.settings));
    await rt.tokens.getToken();
    stack.rotateSecret(app.clientId, app.secretName);
    const readsBefore = stack.vault.reads.filter((n) => n === app.secretName).length;
    const token = await rt.tokens.getToken({ forceRefresh: true });
    expect(peekClaims(token.token)['appid']).toBe(app.clientId);
    expect(stack.vault.reads.filter((n) => n === app.secretName).length - readsBefore).toBe(1);
    const outcomes = stack.idp.requests.filter((r) => r.clientId === app.clientId).map((r) => r.outcome);
    expect(outcomes).toEqual(['issued', 'refused', 'issued']);
  });
});
