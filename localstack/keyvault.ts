/**
 * Enough of the Key Vault secrets REST API, over HTTPS on 127.0.0.1, for the real SecretClient:
 * an unauthenticated request gets the 401 challenge naming the identity provider; a request with a
 * bearer token for https://vault.azure.net from that provider gets the latest (or named) version.
 */
import { randomBytes } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

import type { Certificates } from './certs';
import { type IdentityProvider, VAULT_AUDIENCE } from './idp';

interface Version {
  version: string;
  value: string;
  created: number;
}

export class LocalKeyVault {
  url = '';
  /** Requests that carried a valid token, by secret name. */
  readonly reads: string[] = [];
  /** When false, every request gets 503 (Key Vault unavailable). */
  available = true;
  private readonly secrets = new Map<string, Version[]>();
  private server: https.Server | undefined;

  constructor(private readonly idp: IdentityProvider) {}

  /** Adds a new version of a secret (what `az keyvault secret set` does). */
  setSecret(name: string, value: string): string {
    const version = randomBytes(16).toString('hex');
    const versions = this.secrets.get(name) ?? [];
    versions.push({ version, value, created: Math.floor(Date.now() / 1000) });
    this.secrets.set(name, versions);
    return version;
  }

  async start(certs: Certificates): Promise<void> {
    this.server = https.createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
      const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
        res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
        res.end(JSON.stringify(body));
      };
      req.resume();
      if (!this.available)
        return send(503, { error: { code: 'ServiceUnavailable', message: 'The service is unavailable.' } });
      const url = new URL(req.url ?? '/', this.url);
      const auth = req.headers.authorization ?? '';
      if (!auth.startsWith('Bearer ')) {
        return send(
          401,
          { error: { code: 'Unauthorized', message: 'AKV10000: Request is missing a Bearer or PoP token.' } },
          {
            'www-authenticate': `Bearer authorization="${this.idp.authority}", resource="${VAULT_AUDIENCE}"`,
          },
        );
      }
      this.idp
        .verify(auth.slice('Bearer '.length), VAULT_AUDIENCE)
        .then(() => {
          const match = /^\/secrets\/([0-9A-Za-z-]+)\/?([0-9a-f]*)$/.exec(url.pathname);
          if (req.method !== 'GET' || !match)
            return send(400, { error: { code: 'BadParameter', message: 'Unsupported request.' } });
          const [, name, version] = match as unknown as [string, string, string];
          const versions = this.secrets.get(name);
          const found = version ? versions?.find((v) => v.version === version) : versions?.[versions.length - 1];
          if (!found)
            return send(404, {
              error: {
                code: 'SecretNotFound',
                message: `A secret with (name/id) ${name} was not found in this key vault.`,
              },
            });
          this.reads.push(name);
          send(200, {
            value: found.value,
            id: `${this.url}/secrets/${name}/${found.version}`,
            attributes: {
              enabled: true,
              created: found.created,
              updated: found.created,
              recoveryLevel: 'Recoverable+Purgeable',
              recoverableDays: 90,
            },
            tags: {},
          });
        })
        .catch(() =>
          send(
            401,
            { error: { code: 'Unauthorized', message: 'AKV10032: Invalid issuer or token.' } },
            {
              'www-authenticate': `Bearer authorization="${this.idp.authority}", resource="${VAULT_AUDIENCE}"`,
            },
          ),
        );
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.url = `https://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    this.server = undefined;
  }
}
