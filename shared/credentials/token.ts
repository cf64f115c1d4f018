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
import { ConfidentialClientApplication, LogLevel, type Configuration } from '@azure/msal-node';
import type { InboxqConfig } from '../config/settings';
import { InboxqError, TokenError } from '../errors';
import { readVaultSecret } from './keyvault';
import { CaTrustingNetworkClient } from './tls';

export interface AccessToken {
  token: string;
  expiresOn: Date;
}

export interface TokenSource {
  getToken(options?: { forceRefresh?: boolean }): Promise<AccessToken>;
}

type TokenConfig = Pick<InboxqConfig, 'mailbox' | 'identity' | 'keyVault' | 'tlsCa'>;

/** AADSTS codes an operator meets with client credentials, and what each means for them. */
const AADSTS_HINTS: Record<string, (c: TokenConfig, secretSource: string) => string> = {
  AADSTS7000215: (_c, s) => `the client secret in ${s} is wrong: store the secret's Value (not its Secret ID) from the app registration's Certificates & secrets page`,
  AADSTS7000222: (_c, s) => `the client secret in ${s} has expired: create a new one in the app registration and store it in ${s}`,
  AADSTS700016: (c) => `no application with client id ${c.identity.clientId} in tenant ${c.identity.tenantId}: check INBOXQ_CLIENT_ID and INBOXQ_TENANT_ID`,
  AADSTS90002: (c) => `tenant ${c.identity.tenantId} was not found: check INBOXQ_TENANT_ID`,
  AADSTS500011: () => 'the Office 365 Exchange Online resource was not found in the tenant: check INBOXQ_EXCHANGE_RESOURCE and that the tenant has Exchange Online',
  AADSTS1002012: () => 'the scope is not a /.default scope: check INBOXQ_EXCHANGE_RESOURCE',
};

export function secretSourceName(config: TokenConfig): string {
  const c = config.identity.credential;
  return c.kind === 'secret-setting' ? 'the setting INBOXQ_CLIENT_SECRET' : `Key Vault secret ${c.secretName} (${c.vaultUrl})`;
}

export class ExchangeTokenProvider implements TokenSource {
  private client: ConfidentialClientApplication | undefined;
  private secretVersion: string | undefined;
  private inflight: Promise<AccessToken> | undefined;
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
      if (this.config.identity.credential.kind === 'keyvault-secret' && isInvalidClient(err)) {
        // The secret may have been rotated since the client was built: read the latest version.
        const before = this.secretVersion;
        this.client = undefined;
        await this.ensureClient();
        if (this.secretVersion !== before) return this.acquireOnce(forceRefresh).catch((e) => Promise.reject(this.describe(e)));
      }
      throw this.describe(err);
    }
  }

  private async acquireOnce(forceRefresh: boolean): Promise<AccessToken> {
    const client = await this.ensureClient();
    const result = await client.acquireTokenByClientCredential({ scopes: [this.scope], skipCache: forceRefresh });
    if (!result?.accessToken || !result.expiresOn) {
      throw new TokenError('Entra ID returned no access token', undefined, { mailbox: this.config.mailbox, retryable: true });
    }
    if (result.fromCache === false) this.tokenRequests++;
    return { token: result.accessToken, expiresOn: result.expiresOn };
  }

  private async ensureClient(): Promise<ConfidentialClientApplication> {
    if (this.client) return this.client;
    const { identity, mailbox } = this.config;
    let secret: string;
    if (identity.credential.kind === 'secret-setting') {
      secret = identity.credential.secret;
      this.secretVersion = 'setting';
    } else {
      const read = await readVaultSecret({
        vaultUrl: identity.credential.vaultUrl,
        secretName: identity.credential.secretName,
        mailbox,
        verifyChallengeResource: this.config.keyVault.verifyChallengeResource,
        tlsCa: this.config.tlsCa,
      });
      secret = read.value;
      this.secretVersion = read.version;
    }
    const authorityUrl = new URL(identity.authorityHost);
    const msalConfig: Configuration = {
      auth: {
        clientId: identity.clientId,
        clientSecret: secret,
        authority: `${identity.authorityHost}/${identity.tenantId}`,
        knownAuthorities: [authorityUrl.host],
      },
      system: {
        loggerOptions: { logLevel: LogLevel.Error, piiLoggingEnabled: false, loggerCallback: () => {} },
        ...(this.config.tlsCa ? { networkClient: new CaTrustingNetworkClient(this.config.tlsCa) } : {}),
      },
    };
    this.client = new ConfidentialClientApplication(msalConfig);
    return this.client;
  }

  private describe(err: unknown): InboxqError {
    // Already described (a Key Vault failure, say): it knows better than a generic token error.
    if (err instanceof InboxqError) return err;
    const e = err as { errorCode?: string; errorMessage?: string; message?: string; subError?: string };
    const text = `${e.errorMessage ?? ''} ${e.message ?? ''}`;
    const aadsts = /AADSTS\d+/.exec(text)?.[0];
    const { identity, mailbox } = this.config;
    const who = `app ${identity.clientId} in tenant ${identity.tenantId}`;
    if (aadsts) {
      const hint = AADSTS_HINTS[aadsts]?.(this.config, secretSourceName(this.config));
      return new TokenError(`Entra ID refused a token for ${who}: ${e.errorCode ?? 'error'} ${aadsts}`, aadsts, {
        mailbox,
        cause: err,
        hint: hint ?? `look up ${aadsts} in Entra ID's error code reference`,
        retryable: false,
      });
    }
    if (e.errorCode === 'endpoints_resolution_error' || /fetch failed|ECONNREFUSED|ENOTFOUND|ETIMEDOUT|timed out/i.test(text)) {
      return new TokenError(`Can't reach the identity provider at ${identity.authorityHost} for ${who} (${e.errorCode ?? 'network error'})`, undefined, {
        mailbox,
        cause: err,
        hint: 'check INBOXQ_AUTHORITY_HOST and outbound network access; this run stops and the next one tries again',
        retryable: true,
      });
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
  const source =
    c.credential.kind === 'secret-setting'
      ? `setting:${createHash('sha256').update(c.credential.secret).digest('hex')}`
      : `${c.credential.vaultUrl}/${c.credential.secretName}`;
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
