/** A throw-away CA and one server certificate for localhost + 127.0.0.1, made with openssl per stack. */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

export interface Certificates {
  caFile: string;
  ca: Buffer;
  certFile: string;
  cert: Buffer;
  keyFile: string;
  key: Buffer;
}

/** Runs openssl in `cwd`; says plainly when it is missing or what it answered. */
export function openssl(args: string[], cwd: string): void {
  try {
    execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    if (e.code === 'ENOENT')
      throw new Error('openssl is not installed: apt-get install -y openssl (scripts/setup.sh does it)', {
        cause: err,
      });
    throw new Error(`openssl ${args[0]} failed: ${e.stderr?.toString().trim() ?? e.message}`, { cause: err });
  }
}

export function makeCertificates(dir: string): Certificates {
  openssl(
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '2',
      '-subj',
      '/CN=inboxq local stack CA',
    ],
    dir,
  );
  openssl(
    ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost'],
    dir,
  );
  writeFileSync(
    path.join(dir, 'server.ext'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n',
  );
  openssl(
    [
      'x509',
      '-req',
      '-in',
      'server.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      'server.pem',
      '-days',
      '2',
      '-extfile',
      'server.ext',
    ],
    dir,
  );
  const file = (f: string) => path.join(dir, f);
  return {
    caFile: file('ca.pem'),
    ca: readFileSync(file('ca.pem')),
    certFile: file('server.pem'),
    cert: readFileSync(file('server.pem')),
    keyFile: file('server.key'),
    key: readFileSync(file('server.key')),
  };
}
