/**
 * MSAL for Node uses the global fetch, which can't be given a CA. When inboxq is told to trust an
 * extra CA (INBOXQ_TLS_CA_FILE: a local identity provider, a TLS-inspecting proxy), MSAL gets this
 * network client instead: plain https.request with that CA.
 */
import https from 'node:https';

import type { INetworkModule, NetworkRequestOptions, NetworkResponse } from '@azure/msal-node';

export class CaTrustingNetworkClient implements INetworkModule {
  constructor(private readonly ca: Buffer) {}

  sendGetRequestAsync<T>(url: string, options?: NetworkRequestOptions, timeout?: number): Promise<NetworkResponse<T>> {
    return this.request<T>('GET', url, options, timeout);
  }

  sendPostRequestAsync<T>(url: string, options?: NetworkRequestOptions): Promise<NetworkResponse<T>> {
    return this.request<T>('POST', url, options);
  }

  private request<T>(
    method: string,
    url: string,
    options?: NetworkRequestOptions,
    timeout?: number,
  ): Promise<NetworkResponse<T>> {
    return new Promise((resolve, reject) => {
      const body = options?.body ?? '';
      const headers: Record<string, string | number> = { ...(options?.headers ?? {}) };
      if (method === 'POST') headers['Content-Length'] = Buffer.byteLength(body);
      const req = https.request(url, { method, headers, ca: this.ca, timeout: timeout ?? 30_000 }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text ? JSON.parse(text) : {};
          } catch {
            parsed = { error: 'invalid_response', error_description: `non-JSON answer with HTTP ${res.statusCode}` };
          }
          const outHeaders: Record<string, string> = {};
          for (const [k, v] of Object.entries(res.headers)) if (typeof v === 'string') outHeaders[k] = v;
          resolve({ headers: outHeaders, body: parsed as T, status: res.statusCode ?? 0 });
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new Error(`request to ${new URL(url).host} timed out`)));
      req.on('error', reject);
      if (method === 'POST') req.write(body);
      req.end();
    });
  }
}
