/**
 * A client certificate as Key Vault hands it out: the certificate's secret, in PEM (content type
 * application/x-pem-file), holding the private key and the certificate chain. MSAL wants the
 * private key, the SHA-256 thumbprint of the leaf certificate, and the chain (x5c).
 */
import { createPrivateKey, X509Certificate } from 'node:crypto';

import { InboxqError } from '../errors';

export interface ClientCertificate {
  privateKey: string;
  thumbprintSha256: string;
  /** The certificate chain in PEM, leaf first (sent as x5c). */
  chainPem: string;
  notAfter: Date;
}

/** The certificate read from Key Vault is not a PEM bundle MSAL can use. */
export class CertificateFormatError extends InboxqError {
  override readonly code = 'CERTIFICATE_FORMAT';
}

export function parseClientCertificate(pem: string): ClientCertificate {
  const key = /-----BEGIN (?:RSA |EC )?PRIVATE KEY-----[\s\S]+?-----END (?:RSA |EC )?PRIVATE KEY-----/.exec(pem)?.[0];
  const certs = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (!key || certs.length === 0) {
    throw new CertificateFormatError(
      'it is not a PEM bundle with a private key and a certificate (create the Key Vault certificate with content type application/x-pem-file)',
    );
  }
  const leaf = new X509Certificate(certs[0]!);
  const privateKey = createPrivateKey(key).export({ type: 'pkcs8', format: 'pem' }).toString();
  return {
    privateKey,
    thumbprintSha256: leaf.fingerprint256.replace(/:/g, '').toLowerCase(),
    chainPem: certs.join('\n'),
    notAfter: new Date(leaf.validTo),
  };
}
