/**
 * Parser for the Authentication-Results header field (RFC 8601).
 *
 * Written here because no maintained npm package parses RFC 8601 with its comment and quoting rules
 * (the ones that exist match `dmarc=pass` with regular expressions, the very mistake this guards
 * against). It is pure and tested like a library: see test/unit/authentication-results.test.ts.
 *
 * What it handles:
 * - CFWS: folding white space and comments, nested, with quoted-pairs; a comment is dropped, so
 *   `spf=pass (dmarc=pass)` says nothing about DMARC.
 * - quoted-string values, case-insensitive method, result and property names.
 * - an optional authres-version after the authserv-id, and `none` (no results).
 * - Exchange Online Protection's form, which has no authserv-id at all and starts with a result
 *   (`spf=pass (...) smtp.mailfrom=...; dmarc=pass action=none header.from=...`), and its
 *   non-standard `action=` / `compauth=` extras, kept as plain properties.
 */
import { InboxqError } from '../errors';

export interface AuthResult {
  /** Lower-cased method, without a version: `dmarc`, `spf`, `dkim`, `compauth`, ... */
  method: string;
  /** Lower-cased result keyword: `pass`, `fail`, `bestguesspass`, ... */
  result: string;
  reason: string | undefined;
  /** `ptype.property` (lower-cased) to value, e.g. `header.from` -> `example.com`. Other `key=value` pairs too. */
  properties: Record<string, string>;
}

export interface AuthenticationResults {
  /** Lower-cased authserv-id; "" when the header has none (Exchange Online Protection). */
  authservId: string;
  version: number | undefined;
  results: AuthResult[];
}

/** An Authentication-Results header that is not RFC 8601 (or EOP-shaped): the sender check fails closed. */
export class AuthResultsSyntaxError extends InboxqError {
  override readonly code = 'AUTH_RESULTS_SYNTAX';
}

type Token = { kind: 'word'; value: string; quoted: boolean } | { kind: ';' } | { kind: '=' };

/** Splits a header value into words, `;` and `=`, dropping white space and comments. */
export function tokenize(value: string): Token[] {
  const tokens: Token[] = [];
  let i = 0;
  const n = value.length;
  let word = '';
  const flush = () => {
    if (word) tokens.push({ kind: 'word', value: word, quoted: false });
    word = '';
  };
  while (i < n) {
    const ch = value[i]!;
    if (ch === '(') {
      flush();
      let depth = 0;
      for (; i < n; i++) {
        const c = value[i]!;
        if (c === '\\') {
          i++;
          continue;
        }
        if (c === '(') depth++;
        else if (c === ')' && --depth === 0) break;
      }
      if (depth !== 0) throw new AuthResultsSyntaxError('unterminated comment');
      i++;
      continue;
    }
    if (ch === '"') {
      flush();
      let text = '';
      i++;
      for (; i < n; i++) {
        const c = value[i]!;
        if (c === '\\' && i + 1 < n) {
          text += value[++i];
          continue;
        }
        if (c === '"') break;
        if (c !== '\r' && c !== '\n') text += c;
      }
      if (i >= n) throw new AuthResultsSyntaxError('unterminated quoted string');
      tokens.push({ kind: 'word', value: text, quoted: true });
      i++;
      continue;
    }
    if (ch === ';' || ch === '=') {
      flush();
      tokens.push({ kind: ch });
      i++;
      continue;
    }
    if (ch === ')') throw new AuthResultsSyntaxError('unbalanced ")"');
    if (/\s/.test(ch)) {
      flush();
      i++;
      continue;
    }
    word += ch;
    i++;
  }
  flush();
  return tokens;
}

function splitSemicolons(tokens: Token[]): Token[][] {
  const parts: Token[][] = [[]];
  for (const t of tokens) {
    if (t.kind === ';') parts.push([]);
    else parts[parts.length - 1]!.push(t);
  }
  return parts;
}

const KEYWORD = /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/i;

function parseResinfo(tokens: Token[]): AuthResult {
  // method [/ version] = result { key = value }
  const pairs: [string, string][] = [];
  let i = 0;
  while (i < tokens.length) {
    const k = tokens[i];
    const eq = tokens[i + 1];
    const v = tokens[i + 2];
    if (k?.kind !== 'word' || k.quoted || eq?.kind !== '=' || v?.kind !== 'word') {
      throw new AuthResultsSyntaxError('expected key=value');
    }
    pairs.push([k.value, v.value]);
    i += 3;
  }
  const [first, ...rest] = pairs;
  if (!first) throw new AuthResultsSyntaxError('empty result');
  const method = first[0].split('/')[0]!.trim().toLowerCase();
  const result = first[1].toLowerCase();
  if (!KEYWORD.test(method) || !KEYWORD.test(result))
    throw new AuthResultsSyntaxError(`malformed method or result "${method}=${result}"`);
  let reason: string | undefined;
  const properties: Record<string, string> = {};
  for (const [key, value] of rest) {
    const k = key.toLowerCase();
    if (k === 'reason') reason = value;
    else if (!(k in properties)) properties[k] = value;
  }
  return { method, result, reason, properties };
}

/**
 * Parses one Authentication-Results field value (what follows `Authentication-Results:`).
 * Throws AuthResultsSyntaxError on input that is not an RFC 8601 (or EOP-shaped) header.
 */
export function parseAuthenticationResults(value: string): AuthenticationResults {
  const parts = splitSemicolons(tokenize(value.replace(/\r?\n/g, ' ')));
  const head = parts[0]!;
  let authservId = '';
  let version: number | undefined;
  let resinfos = parts.slice(1);

  const headIsResult = head.length >= 3 && head[1]?.kind === '=';
  if (headIsResult) {
    // Exchange Online Protection: no authserv-id, the first resinfo stands where it would be.
    resinfos = parts;
  } else {
    const [id, ver, ...extra] = head;
    if (id?.kind !== 'word') throw new AuthResultsSyntaxError('missing authserv-id');
    authservId = id.value.toLowerCase();
    if (ver) {
      if (ver.kind !== 'word' || ver.quoted || !/^\d+$/.test(ver.value))
        throw new AuthResultsSyntaxError('malformed authres-version');
      version = Number(ver.value);
    }
    if (extra.length > 0) throw new AuthResultsSyntaxError('unexpected text after the authserv-id');
  }

  const nonEmpty = resinfos.filter((p) => p.length > 0);
  if (nonEmpty.length === 1 && nonEmpty[0]!.length === 1) {
    const only = nonEmpty[0]![0]!;
    if (only.kind === 'word' && only.value.toLowerCase() === 'none') return { authservId, version, results: [] };
  }
  return { authservId, version, results: nonEmpty.map(parseResinfo) };
}
