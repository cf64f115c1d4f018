/**
 * An identity provider shaped like Entra ID, over HTTPS on 127.0.0.1, for the real MSAL and
 * @azure/identity code paths:
 *   GET  /{tenant}/v2.0/.well-known/openid-configuration
 *   POST /{tenant}/oauth2/v2.0/token        (client_credentials with client_secret)
 *   GET  /{tenant}/discovery/v2.0/keys
 * Tokens are RS256 JWTs shaped like Exchange Online app-only tokens (v1 issuer
 * https://sts.windows.net/{tenant}/, aud = scope minus /.default, roles of the app). A wrong
 * secret gets Entra's 401 invalid_client AADSTS7000215, an unknown client AADSTS700016.
 */
import { randomUUID, X509Certificate } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

// jose is ESM-only: its types come in with resolution-mode, the module itself with import() at run time.
import type * as Jose from 'jose' with { 'resolution-mode': 'import' };

import type { Certificates } from './certs';
import { readBody } from './net';

type JoseModule = typeof Jose;
type SigningKey = Awaited<ReturnType<JoseModule['generateKeyPair']>>['privateKey'];

export const EXCHANGE_AUDIENCE = 'https://outlook.office365.com';
export const VAULT_AUDIENCE = 'https://vault.azure.net';

export interface FederatedCredential {
  issuer: string;
  subject: string;
  audiences: string[];
}

export interface ManagedIdentity {
  clientId: string;
  principalId: string;
}

export interface RegisteredApp {
  clientId: string;
  /** Client secret, if the app has one. */
  secret?: string;
  /** PEM certificates whose private keys may sign client assertions. */
  certificates?: string[];
  /** Federated credentials (workload identity federation). */
  federated?: FederatedCredential[];
  /** Application roles granted for Exchange Online (IMAP.AccessAsApp, SMTP.SendAsApp). */
  roles: string[];
  /** Object id of the app's service principal (the token's oid/sub). */
  objectId?: string;
}

export interface TokenRequestLog {
  clientId: string;
  scope: string;
  outcome: 'issued' | 'refused';
  error?: string;
}

export class IdentityProvider {
  readonly tenantId: string;
  /**
   * The tenant the managed identity lives in (the Azure deployment's), apart from the tenant the
   * mailbox's app asks for tokens (tenantId): the federated credential names this one as issuer,
   * as it must when the mailbox is in another tenant.
   */
  readonly identityTenantId = randomUUID();
  readonly kid = 'inboxq-local-1';
  url = '';
  publicKeyPem = '';
  /** Every call to the token endpoint, in order. */
  readonly requests: TokenRequestLog[] = [];
  /** The next N Exchange tokens are issued already expired (a server refuses them; MSAL doesn't know). */
  expiredTokensToIssue = 0;
  /** Lifetime of issued tokens. */
  tokenLifetimeSeconds = 3600;
  /** Apps whose IMAP logins Exchange refuses (service principal not registered, no mailbox permission). */
  readonly imapRefusedApps = new Set<string>();
  /** Calls to the introspection endpoint (each IMAP login). */
  introspections = 0;

  private readonly apps = new Map<string, RegisteredApp>();
  private readonly identities = new Map<string, ManagedIdentity>();
  private server: https.Server | undefined;
  private msiServer: http.Server | undefined;
  /** App Service's managed identity endpoint (IDENTITY_ENDPOINT), plain http on loopback as there. */
  msiEndpoint = '';
  readonly msiHeader = randomUUID();
  private key: SigningKey | undefined;
  private jwk: Record<string, unknown> | undefined;
  private jose: JoseModule | undefined;

  constructor(tenantId: string = randomUUID()) {
    this.tenantId = tenantId;
  }

  get issuer(): string {
    return `https://sts.windows.net/${this.tenantId}/`;
  }

  get authority(): string {
    return `${this.url}/${this.tenantId}`;
  }

  registerApp(app: RegisteredApp): void {
    this.apps.set(app.clientId.toLowerCase(), { objectId: randomUUID(), ...app });
  }

  /** A managed identity the MSI endpoint gives tokens to. */
  registerManagedIdentity(identity: ManagedIdentity): void {
    this.identities.set(identity.clientId.toLowerCase(), identity);
  }

  /** Issuer of managed-identity tokens for api://AzureADTokenExchange (what a federated credential names). */
  get federationIssuer(): string {
    return `${this.url}/${this.identityTenantId}/v2.0`;
  }

  app(clientId: string): RegisteredApp | undefined {
    return this.apps.get(clientId.toLowerCase());
  }

  async start(certs: Certificates): Promise<void> {
    this.jose = await import('jose');
    const { privateKey, publicKey } = await this.jose.generateKeyPair('RS256', { extractable: true });
    this.key = privateKey;
    this.publicKeyPem = await this.jose.exportSPKI(publicKey);
    this.jwk = { ...(await this.jose.exportJWK(publicKey)), kid: this.kid, use: 'sig', alg: 'RS256' };
    this.server = https.createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
      this.handle(req.method ?? 'GET', req.url ?? '/', req)
        .then(({ status, body, headers }) => {
          res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
          res.end(JSON.stringify(body));
        })
        .catch((err: Error) => {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: 'server_error', error_description: err.message }));
        });
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    this.msiServer = http.createServer((req, res) => {
      this.managedIdentityToken(req.url ?? '/', req.headers['x-identity-header']).then(
        ({ status, body }) => {
          res.writeHead(status, { 'content-type': 'application/json' });
          res.end(JSON.stringify(body));
        },
        (err: Error) => {
          res.writeHead(500, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: 'server_error', error_description: err.message }));
        },
      );
    });
    await new Promise<void>((resolve) => this.msiServer!.listen(0, '127.0.0.1', resolve));
    this.msiEndpoint = `http://127.0.0.1:${(this.msiServer.address() as AddressInfo).port}/msi/token`;
  }

  private async managedIdentityToken(rawUrl: string, header: string | string[] | undefined) {
    const url = new URL(rawUrl, 'http://127.0.0.1');
    if (header !== this.msiHeader)
      return {
        status: 401,
        body: { error: 'invalid_request', error_description: 'X-IDENTITY-HEADER is missing or wrong' },
      };
    const resource = url.searchParams.get('resource') ?? '';
    const clientId = (url.searchParams.get('client_id') ?? [...this.identities.keys()][0] ?? '').toLowerCase();
    const identity = this.identities.get(clientId);
    if (!identity)
      return { status: 400, body: { error: 'invalid_request', error_description: `Identity not found: ${clientId}` } };
    const federation = resource === 'api://AzureADTokenExchange';
    const issuer = federation ? this.federationIssuer : this.issuer;
    const token = await this.sign(
      {
        oid: identity.principalId,
        appid: identity.clientId,
        idtyp: 'app',
        ...(federation ? { tid: this.identityTenantId } : {}),
      },
      { issuer, audience: resource, subject: identity.principalId, expiresIn: 3600 },
    );
    return {
      status: 200,
      body: {
        access_token: token,
        expires_on: String(Math.floor(Date.now() / 1000) + 3600),
        resource,
        token_type: 'Bearer',
        client_id: identity.clientId,
      },
    };
  }

  async stop(): Promise<void> {
    if (this.msiServer) await new Promise<void>((resolve) => this.msiServer!.close(() => resolve()));
    this.msiServer = undefined;
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }

  /** Signs a token with the provider's key: for tests that need a token without a client (e.g. to seed a mailbox). */
  async mint(
    claims: Record<string, unknown>,
    options: { audience: string; expiresIn?: number; subject?: string },
  ): Promise<string> {
    return this.sign(claims, { ...options, issuer: this.issuer });
  }

  private async sign(
    claims: Record<string, unknown>,
    options: { issuer: string; audience: string; expiresIn?: number; subject?: string },
  ): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    const exp = now + (options.expiresIn ?? this.tokenLifetimeSeconds);
    return new this.jose!.SignJWT({ tid: this.tenantId, ...claims })
      .setProtectedHeader({ alg: 'RS256', kid: this.kid, typ: 'JWT' })
      .setIssuer(options.issuer)
      .setAudience(options.audience)
      .setSubject(options.subject ?? randomUUID())
      .setIssuedAt(now - 5)
      .setNotBefore(now - 5)
      .setExpirationTime(exp)
      .sign(this.key!);
  }

  /** Verifies a token this provider issued: signature, issuer, audience, expiry. Returns its claims. */
  async verify(token: string, audience: string): Promise<Record<string, unknown>> {
    const key = await this.jose!.importSPKI(this.publicKeyPem, 'RS256');
    const { payload } = await this.jose!.jwtVerify(token, key, {
      issuer: this.issuer,
      audience,
      algorithms: ['RS256'],
    });
    return payload;
  }

  private async handle(method: string, rawUrl: string, req: http.IncomingMessage) {
    const url = new URL(rawUrl, this.url);
    const [tenant, ...rest] = url.pathname.split('/').filter(Boolean);
    const route = rest.join('/');
    if (tenant !== this.tenantId) {
      return {
        status: 400,
        body: aadError('invalid_request', 'AADSTS90002', `Tenant '${tenant}' not found.`),
        headers: {},
      };
    }
    if (method === 'GET' && route === 'v2.0/.well-known/openid-configuration') {
      const base = `${this.url}/${this.tenantId}`;
      return {
        status: 200,
        headers: {},
        body: {
          issuer: `${base}/v2.0`,
          authorization_endpoint: `${base}/oauth2/v2.0/authorize`,
          token_endpoint: `${base}/oauth2/v2.0/token`,
          jwks_uri: `${base}/discovery/v2.0/keys`,
          response_types_supported: ['code', 'id_token', 'token'],
          subject_types_supported: ['pairwise'],
          id_token_signing_alg_values_supported: ['RS256'],
          token_endpoint_auth_methods_supported: ['client_secret_post', 'private_key_jwt', 'client_secret_basic'],
          tenant_region_scope: 'EU',
        },
      };
    }
    if (method === 'GET' && route === 'discovery/v2.0/keys')
      return { status: 200, headers: {}, body: { keys: [this.jwk] } };
    if (method === 'POST' && route === 'oauth2/v2.0/token') return this.token(new URLSearchParams(await readBody(req)));
    if (method === 'POST' && route === 'introspect') return this.introspect(new URLSearchParams(await readBody(req)));
    return { status: 404, headers: {}, body: { error: 'not_found' } };
  }

  /**
   * A client assertion is either signed by one of the app's certificates (found by its x5t#S256
   * thumbprint), or is a token this provider gave a managed identity, matching one of the app's
   * federated credentials (issuer, subject, audience). Returns what Entra ID would refuse with.
   */
  private async checkAssertion(
    app: RegisteredApp,
    assertion: string,
  ): Promise<{ status: number; code: string; text: string } | undefined> {
    const jose = this.jose!;
    let header;
    try {
      header = jose.decodeProtectedHeader(assertion);
    } catch {
      return { status: 400, code: 'AADSTS50027', text: 'JWT token is invalid or malformed.' };
    }
    if (header.kid === this.kid) {
      let claims;
      try {
        claims = (
          await jose.jwtVerify(assertion, await jose.importSPKI(this.publicKeyPem, 'RS256'), {
            algorithms: ['RS256'],
            clockTolerance: 300,
          })
        ).payload;
      } catch {
        return { status: 400, code: 'AADSTS700024', text: 'Client assertion is not within its valid time range.' };
      }
      const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
      const match = (app.federated ?? []).find(
        (f) => f.issuer === claims.iss && f.subject === claims.sub && f.audiences.some((a) => aud.includes(a)),
      );
      if (!match) {
        return {
          status: 400,
          code: 'AADSTS70021',
          text: `No matching federated identity record found for presented assertion. Assertion Issuer: '${claims.iss}'. Assertion Subject: '${claims.sub}'.`,
        };
      }
      return undefined;
    }
    const thumbprint =
      typeof header['x5t#S256'] === 'string' ? Buffer.from(header['x5t#S256'], 'base64url').toString('hex') : undefined;
    const cert = (app.certificates ?? []).find((c) => thumbprintSha256(c) === thumbprint);
    if (!cert) {
      return {
        status: 401,
        code: 'AADSTS700027',
        text: `The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found.]`,
      };
    }
    try {
      const key = await jose.importX509(cert, String(header.alg));
      // Entra tolerates 5 minutes of clock skew on client assertions.
      await jose.jwtVerify(assertion, key, {
        issuer: app.clientId,
        subject: app.clientId,
        audience: `${this.authority}/oauth2/v2.0/token`,
        clockTolerance: 300,
      });
    } catch (err) {
      return {
        status: 401,
        code: 'AADSTS700027',
        text: `Client assertion failed signature validation. [Reason - ${(err as Error).message}]`,
      };
    }
    return undefined;
  }

  /**
   * Token introspection for the local IMAP server (not an Entra endpoint): what Exchange decides
   * when an app logs in. Active only for a token this provider signed, unexpired, for Exchange
   * Online, carrying IMAP.AccessAsApp, from an app Exchange has not been told to refuse.
   */
  private async introspect(form: URLSearchParams) {
    this.introspections++;
    try {
      const claims = await this.verify(form.get('token') ?? '', EXCHANGE_AUDIENCE);
      const roles = Array.isArray(claims['roles']) ? (claims['roles'] as string[]) : [];
      const appid = typeof claims['appid'] === 'string' ? claims['appid'] : '';
      if (!roles.includes('IMAP.AccessAsApp') || this.imapRefusedApps.has(appid.toLowerCase()))
        return { status: 200, headers: {}, body: { active: false } };
      return { status: 200, headers: {}, body: { active: true, tid: claims['tid'], appid, roles, exp: claims['exp'] } };
    } catch {
      return { status: 200, headers: {}, body: { active: false } };
    }
  }

  private async token(form: URLSearchParams) {
    const clientId = (form.get('client_id') ?? '').toLowerCase();
    const scope = form.get('scope') ?? '';
    const refuse = (status: number, error: string, code: string, text: string) => {
      this.requests.push({ clientId, scope, outcome: 'refused', error: code });
      return { status, headers: {}, body: aadError(error, code, text) };
    };
    if (form.get('grant_type') !== 'client_credentials')
      return refuse(400, 'unsupported_grant_type', 'AADSTS70003', 'The app requested an unsupported grant type.');
    const app = this.apps.get(clientId);
    if (!app) {
      return refuse(
        400,
        'unauthorized_client',
        'AADSTS700016',
        `Application with identifier '${clientId}' was not found in the directory '${this.tenantId}'.`,
      );
    }
    const assertion = form.get('client_assertion');
    if (assertion) {
      if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
        return refuse(400, 'invalid_request', 'AADSTS50027', 'Invalid client assertion type.');
      }
      const problem = await this.checkAssertion(app, assertion);
      if (problem) return refuse(problem.status, 'invalid_client', problem.code, problem.text);
    } else if (app.secret === undefined || form.get('client_secret') !== app.secret) {
      return refuse(
        401,
        'invalid_client',
        'AADSTS7000215',
        `Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '${clientId}'.`,
      );
    }
    const resource = scope
      .split(' ')
      .find((s) => s.endsWith('/.default'))
      ?.replace(/\/\.default$/, '');
    if (!resource)
      return refuse(
        400,
        'invalid_scope',
        'AADSTS1002012',
        `The provided value for scope ${scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.`,
      );
    const isExchange = resource === EXCHANGE_AUDIENCE;
    let expiresIn = this.tokenLifetimeSeconds;
    if (isExchange && this.expiredTokensToIssue > 0) {
      this.expiredTokensToIssue--;
      expiresIn = -60;
    }
    const accessToken = await this.mint(
      { appid: app.clientId, oid: app.objectId, idtyp: 'app', ver: '1.0', ...(isExchange ? { roles: app.roles } : {}) },
      { audience: resource, expiresIn, subject: app.objectId! },
    );
    this.requests.push({ clientId, scope, outcome: 'issued' });
    return {
      status: 200,
      headers: {},
      // expires_in is what MSAL caches by: an "expired early" token still looks fresh to it.
      body: {
        token_type: 'Bearer',
        expires_in: this.tokenLifetimeSeconds,
        ext_expires_in: this.tokenLifetimeSeconds,
        access_token: accessToken,
      },
    };
  }
}

function thumbprintSha256(pem: string): string {
  return new X509Certificate(pem).fingerprint256.replace(/:/g, '').toLowerCase();
}

function aadError(error: string, code: string, text: string) {
  const traceId = randomUUID();
  const correlationId = randomUUID();
  return {
    error,
    error_description: `${code}: ${text} Trace ID: ${traceId} Correlation ID: ${correlationId} Timestamp: ${new Date().toISOString()}`,
    error_codes: [Number(code.replace('AADSTS', ''))],
    timestamp: new Date().toISOString(),
    trace_id: traceId,
    correlation_id: correlationId,
  };
}
