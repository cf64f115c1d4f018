/**
 * App-only access tokens for Exchange Online (IMAP.AccessAsApp, SMTP.SendAsApp), from Entra ID's
 * client-credentials grant through MSAL.
 *
 * - One ConfidentialClientApplication per credential at module scope, so warm invocations reuse its
 *   in-memory cache (MSAL renews 5 minutes before expiry).
 * - Concurrent first callers share one request: MSAL does not de-duplicate them itself.
 * - `forceRefresh` skips the cache, for a token a server refused although MSAL thought it valid.
 * - When Entra answers invalid_client and the secret came from Key Vault, the latest version is read
 *   and the client rebuilt once: a rotated secret takes effect without a restart.
 */
import { createHash } from 'node:crypto';

import { ManagedIdentityCredential } from '@azure/identity';
import { ConfidentialClientApplication, type Configuration, LogLevel } from '@azure/msal-node';

import type { InboxqConfig } from '../config/types';
import { InboxqError, TokenError } from '../errors';
import { inboxqMetrics } from '../telemetry/metrics';
import { parseClientCertificate } from './certificate';
import { readVaultSecret } from './keyvault';
import { CaTrustingNetworkClient } from './tls';

/** The audience Entra ID accepts a managed identity's token for, as a federated client assertion. */
export const FEDERATION_SCOPE = 'api://AzureADTokenExchange/.default';

export interface AccessToken {
  token: string;
  expiresOn: Date;
}

export interface TokenSource {
  getToken(options?: { forceRefresh?: boolean }): Promise<AccessToken>;
}

type TokenConfig = Pick<InboxqConfig, 'mailbox' | 'identity' | 'keyVault' | 'tlsCa'>;

/** The issuer and subject of the managed identity's last token: what a federated credential must name. */
export interface AssertionIdentity {
  issuer: string;
  subject: string;
}

/** AADSTS codes an operator meets with client credentials, and what each means for them. */
const AADSTS_HINTS: Record<
  string,
  (c: TokenConfig, secretSource: string, assertion: AssertionIdentity | undefined) => string
> = {
  AADSTS7000215: (_c, s) =>
    `the client secret in ${s} is wrong: store the secret's Value (not its Secret ID) from the app registration's Certificates & secrets page`,
  AADSTS7000222: (_c, s) =>
    `the client secret in ${s} has expired: create a new one in the app registration and store it in ${s}`,
  AADSTS700016: (c) =>
    `no application with client id ${c.identity.clientId} in tenant ${c.identity.tenantId}: check INBOXQ_CLIENT_ID and INBOXQ_TENANT_ID`,
  AADSTS90002: (c) => `tenant ${c.identity.tenantId} was not found: check INBOXQ_TENANT_ID`,
  AADSTS500011: () =>
    'the Office 365 Exchange Online resource was not found in the tenant: check INBOXQ_EXCHANGE_RESOURCE and that the tenant has Exchange Online',
  AADSTS1002012: () => 'the scope is not a /.default scope: check INBOXQ_EXCHANGE_RESOURCE',
  AADSTS700027: (_c, s) =>
    `the certificate in ${s} is not registered on the app registration (Certificates & secrets): upload its public part there`,
  AADSTS70021: (c, _s, a) =>
    `the app registration has no federated credential for this managed identity: ${federatedCredentialCommand(c, a)}`,
  AADSTS700211: (c, _s, a) =>
    `the managed identity's token has an issuer the federated credential does not name: ${federatedCredentialCommand(c, a)}`,
  AADSTS700213: (c, _s, a) =>
    `no federated credential matches the managed identity: ${federatedCredentialCommand(c, a)}`,
};

export function secretSourceName(config: TokenConfig): string {
  const c = config.identity.credential;
  switch (c.kind) {
    case 'secret-setting':
      return 'the setting INBOXQ_CLIENT_SECRET';
    case 'keyvault-secret':
      return `Key Vault secret ${c.secretName} (${c.vaultUrl})`;
    case 'keyvault-certificate':
      return `Key Vault certificate ${c.certificateName} (${c.vaultUrl})`;
    case 'managed-identity':
      return `the managed identity ${c.identityClientId} (federated credential)`;
  }
}

/**
 * The federated-credential command for a managed identity, as docs/m365-setup.md gives it. The
 * issuer and subject are those of the identity's own token when it was obtained: its issuer is the
 * tenant the identity lives in (the Azure deployment's), which is not INBOXQ_TENANT_ID when the
 * mailbox is in another tenant. Without one, the deployment's tenant is left to fill in.
 */
export function federatedCredentialCommand(config: TokenConfig, assertion?: AssertionIdentity): string {
  const { clientId, authorityHost } = config.identity;
  const issuer =
    assertion?.issuer ?? `${authorityHost}/<tenant id of the managed identity (the Azure deployment's)>/v2.0`;
  const subject = assertion?.subject ?? '<principal id of the managed identity>';
  return `az ad app federated-credential create --id ${clientId} --parameters '{"name":"inboxq","issuer":"${issuer}","subject":"${subject}","audiences":["api://AzureADTokenExchange"]}'`;
}

/** The issuer and subject claims of a JWT, unverified: only ever used to word a hint. */
export function assertionIdentity(jwt: string): AssertionIdentity | undefined {
  try {
    const claims = JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as {
      iss?: unknown;
      sub?: unknown;
    };
    return typeof claims.iss === 'string' && typeof claims.sub === 'string'
      ? { issuer: claims.iss, subject: claims.sub }
      : undefined;
  } catch {
    return undefined;
  }
}

export class ExchangeTokenProvider implements TokenSource {
  private client: ConfidentialClientApplication | undefined;
  private secretVersion: string | undefined;
  private inflight: Promise<AccessToken> | undefined;
  /** The managed identity's last federation token's issuer and subject, for the hint when Entra ID refuses it. */
  private assertion: AssertionIdentity | undefined;
  /** Calls that reached the token endpoint (not served from MSAL's cache); for telemetry and benchmarks. */
  tokenRequests = 0;

  constructor(private readonly config: TokenConfig) {}

  get scope(): string {
    return `${this.config.identity.exchangeResource}/.default`;
  }

  getToken(options: { forceRefresh?: boolean } = {}): Promise<AccessToken> {
    if (options.forceRefresh) return this.acquire(true);
    this.inflight ??= this.acquire(false).finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  private async acquire(forceRefresh: boolean): Promise<AccessToken> {
    try {
      return await this.acquireOnce(forceRefresh);
    } catch (err) {
      const kind = this.config.identity.credential.kind;
      if ((kind === 'keyvault-secret' || kind === 'keyvault-certificate') && isInvalidClient(err)) {
        // The secret or certificate may have been rotated since the client was built: read the latest version.
        const before = this.secretVersion;
        this.client = undefined;
        await this.ensureClient();
        if (this.secretVersion !== before)
          return this.acquireOnce(forceRefresh).catch((e) => Promise.reject(this.describe(e)));
      }
      throw this.describe(err);
    }
  }

  private async acquireOnce(forceRefresh: boolean): Promise<AccessToken> {
    const client = await this.ensureClient();
    const result = await client.acquireTokenByClientCredential({ scopes: [this.scope], skipCache: forceRefresh });
    if (!result?.accessToken || !result.expiresOn) {
      throw new TokenError('Entra ID returned no access token', undefined, {
        mailbox: this.config.mailbox,
        retryable: true,
      });
    }
    if (result.fromCache === false) {
      this.tokenRequests++;
      inboxqMetrics.tokenRequest('issued');
    }
    return { token: result.accessToken, expiresOn: result.expiresOn };
  }

  private async ensureClient(): Promise<ConfidentialClientApplication> {
    if (this.client) return this.client;
    const { identity } = this.config;
    const authorityUrl = new URL(identity.authorityHost);
    const msalConfig: Configuration = {
      auth: {
        clientId: identity.clientId,
        authority: `${identity.authorityHost}/${identity.tenantId}`,
        knownAuthorities: [authorityUrl.host],
        ...(await this.credentialForMsal()),
      },
      system: {
        loggerOptions: { logLevel: LogLevel.Error, piiLoggingEnabled: false, loggerCallback: () => {} },
        ...(this.config.tlsCa ? { networkClient: new CaTrustingNetworkClient(this.config.tlsCa) } : {}),
      },
    };
    this.client = new ConfidentialClientApplication(msalConfig);
    return this.client;
  }

  /** The credential part of MSAL's configuration, for each kind of credential. */
  private async credentialForMsal(): Promise<
    Pick<Configuration['auth'], 'clientSecret' | 'clientCertificate' | 'clientAssertion'>
  > {
    const { identity, mailbox } = this.config;
    const c = identity.credential;
    const vault = (vaultUrl: string, secretName: string) =>
      readVaultSecret({
        vaultUrl,
        secretName,
        mailbox,
        verifyChallengeResource: this.config.keyVault.verifyChallengeResource,
        instanceDiscovery: this.config.keyVault.instanceDiscovery,
        tlsCa: this.config.tlsCa,
      });
    switch (c.kind) {
      case 'secret-setting':
        this.secretVersion = 'setting';
        return { clientSecret: c.secret };
      case 'keyvault-secret': {
        const read = await vault(c.vaultUrl, c.secretName);
        this.secretVersion = read.version;
        return { clientSecret: read.value };
      }
      case 'keyvault-certificate': {
        const read = await vault(c.vaultUrl, c.certificateName);
        this.secretVersion = read.version;
        let cert;
        try {
          cert = parseClientCertificate(read.value);
        } catch (err) {
          throw new TokenError(
            `Key Vault certificate ${c.certificateName} can't be used: ${err instanceof InboxqError ? err.summary : (err as Error).message}`,
            undefined,
            {
              mailbox,
              hint: `az keyvault certificate import --vault-name <vault> --name ${c.certificateName} --file cert-and-key.pem (PEM policy)`,
            },
          );
        }
        return {
          clientCertificate: {
            thumbprintSha256: cert.thumbprintSha256,
            privateKey: cert.privateKey,
            x5c: cert.chainPem,
          },
        };
      }
      case 'managed-identity': {
        this.secretVersion = 'managed-identity';
        // Created once: its own token cache serves warm invocations.
        const mi = new ManagedIdentityCredential({ clientId: c.identityClientId });
        return {
          clientAssertion: async () => {
            try {
              const { token } = await mi.getToken(FEDERATION_SCOPE);
              this.assertion = assertionIdentity(token);
              return token;
            } catch (err) {
              throw new TokenError(
                `The managed identity ${c.identityClientId} gave no token for ${FEDERATION_SCOPE} (${(err as Error).name})`,
                undefined,
                {
                  mailbox,
                  cause: err,
                  retryable: true,
                  hint: 'INBOXQ_CLIENT_CREDENTIAL=managed-identity needs a managed identity on the Function App; set INBOXQ_MANAGED_IDENTITY_CLIENT_ID to the client id of a user-assigned one',
                },
              );
            }
          },
        };
      }
    }
  }

  private describe(err: unknown): InboxqError {
    if (!(err instanceof InboxqError)) inboxqMetrics.tokenRequest('failed');
    // Already described (a Key Vault failure, say): it knows better than a generic token error.
    if (err instanceof InboxqError) return err;
    const e = err as { errorCode?: string; errorMessage?: string; message?: string; subError?: string };
    const text = `${e.errorMessage ?? ''} ${e.message ?? ''}`;
    const aadsts = /AADSTS\d+/.exec(text)?.[0];
    const { identity, mailbox } = this.config;
    const who = `app ${identity.clientId} in tenant ${identity.tenantId}`;
    if (aadsts) {
      const hint = AADSTS_HINTS[aadsts]?.(this.config, secretSourceName(this.config), this.assertion);
      return new TokenError(`Entra ID refused a token for ${who}: ${e.errorCode ?? 'error'} ${aadsts}`, aadsts, {
        mailbox,
        cause: err,
        hint: hint ?? `look up ${aadsts} in Entra ID's error code reference`,
        retryable: false,
      });
    }
    if (
      e.errorCode === 'endpoints_resolution_error' ||
      /fetch failed|ECONNREFUSED|ENOTFOUND|ETIMEDOUT|timed out/i.test(text)
    ) {
      return new TokenError(
        `Can't reach the identity provider at ${identity.authorityHost} for ${who} (${e.errorCode ?? 'network error'})`,
        undefined,
        {
          mailbox,
          cause: err,
          hint: 'check INBOXQ_AUTHORITY_HOST and outbound network access; this run stops and the next one tries again',
          retryable: true,
        },
      );
    }
    return new TokenError(`No token for ${who}: ${e.errorCode ?? (err as Error)?.name ?? 'error'}`, undefined, {
      mailbox,
      cause: err,
      hint: 'run `inboxq doctor` to check the app registration step by step',
      retryable: true,
    });
  }
}

function isInvalidClient(err: unknown): boolean {
  const e = err as { errorCode?: string; errorMessage?: string };
  return e?.errorCode === 'invalid_client' || /AADSTS7000215|AADSTS7000222/.test(e?.errorMessage ?? '');
}

const providers = new Map<string, ExchangeTokenProvider>();

/** The provider for a configuration, shared across invocations of a warm instance. */
export function tokenProviderFor(config: TokenConfig): ExchangeTokenProvider {
  const c = config.identity;
  // A secret from a setting is told apart by its hash, so a corrected setting gets a new client.
  const cred = c.credential;
  const source =
    cred.kind === 'secret-setting'
      ? `setting:${createHash('sha256').update(cred.secret).digest('hex')}`
      : cred.kind === 'keyvault-secret'
        ? `secret:${cred.vaultUrl}/${cred.secretName}`
        : cred.kind === 'keyvault-certificate'
          ? `certificate:${cred.vaultUrl}/${cred.certificateName}`
          : `managed-identity:${cred.identityClientId}`;
  const key = [c.authorityHost, c.tenantId, c.clientId, c.exchangeResource, source].join('|');
  let provider = providers.get(key);
  if (!provider) {
    provider = new ExchangeTokenProvider(config);
    providers.set(key, provider);
  }
  return provider;
}

/** Claims of a JWT access token, decoded without verification: for diagnostics (roles, audience), never for trust. */
export function peekClaims(token: string): Record<string, unknown> {
  const payload = token.split('.')[1];
  if (!payload) return {};
  try {
    return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
  } catch {
    return {};
  }
}
