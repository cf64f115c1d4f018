/**
 * The app settings and host.json as the Functions host reads them: `Values` of local.settings.json
 * under the environment (a variable already set wins, as with `func start`), `%NAME%` in a binding
 * resolved from them, and host.json with `AzureFunctionsJobHost__path__to__value` settings
 * overriding its values, as the real host allows.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { parse as parseJsonc, type ParseError } from 'jsonc-parser';

export type AppSettings = Record<string, string | undefined>;

/** A problem that keeps the host from starting, in the host's words. */
export class HostStartError extends Error {
  override readonly name = 'HostStartError';
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
  }
}

/** `file` null: no settings file at all, only `env` (tools that bring every setting themselves). */
export function loadAppSettings(appRoot: string, env: AppSettings = process.env, file?: string | null): AppSettings {
  if (file === null) return { ...env };
  const settingsFile = file ?? path.join(appRoot, 'local.settings.json');
  const values: Record<string, string> = {};
  if (existsSync(settingsFile)) {
    const errors: ParseError[] = [];
    const json = parseJsonc(readFileSync(settingsFile, 'utf8'), errors) as { Values?: Record<string, unknown> } | null;
    if (errors.length > 0 || !json || typeof json !== 'object')
      throw new HostStartError([`${settingsFile} is not valid JSON`]);
    for (const [k, v] of Object.entries(json.Values ?? {})) if (typeof v === 'string') values[k] = v;
  } else if (file) {
    throw new HostStartError([`settings file ${file} does not exist`]);
  }
  return { ...values, ...env };
}

/** `%NAME%` replaced by the app setting; a name that is unset or empty is the host's error. */
export function resolveSetting(value: string, settings: AppSettings): string {
  return value.replace(/%([^%]+)%/g, (_m, name: string) => {
    const resolved = settings[name];
    if (resolved === undefined || resolved === '')
      throw new HostStartError([`'%${name}%' does not resolve to a value.`]);
    return resolved;
  });
}

export interface QueueOptions {
  batchSize: number;
  newBatchThreshold: number;
  maxDequeueCount: number;
  visibilityTimeoutMs: number;
  maxPollingIntervalMs: number;
  messageEncoding: 'base64' | 'none';
}

export interface HostJson {
  queues: QueueOptions;
  functionTimeoutMs: number | undefined;
  /** `logging.logLevel`: the least level sent to Application Insights per category (app-insights.ts). */
  logLevel: Record<string, string>;
}

/** "00:00:30" (or "1.00:00:00") as milliseconds. */
export function parseTimeSpan(value: string, what: string): number {
  const m = /^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,7}))?$/.exec(value.trim());
  if (!m) throw new HostStartError([`${what}: '${value}' is not a time span like 00:00:30`]);
  const [, d, h, min, s, frac] = m;
  const fraction = frac ? Number(`0.${frac}`) : 0;
  return ((Number(d ?? 0) * 24 + Number(h)) * 3600 + Number(min) * 60 + Number(s) + fraction) * 1000;
}

/** host.json, with AzureFunctionsJobHost__a__b settings applied over it (names case-insensitive, as the host treats them). */
export function readHostJson(appRoot: string, settings: AppSettings): HostJson {
  const file = path.join(appRoot, 'host.json');
  if (!existsSync(file)) throw new HostStartError([`host.json not found in ${appRoot}`]);
  const json = parseJsonc(readFileSync(file, 'utf8')) as Record<string, unknown>;
  for (const [name, value] of Object.entries(settings)) {
    const m = /^AzureFunctionsJobHost__(.+)$/i.exec(name);
    if (!m || value === undefined) continue;
    let node: Record<string, unknown> = json;
    const keys = m[1]!.split('__');
    for (const key of keys.slice(0, -1)) {
      const existing = Object.keys(node).find((k) => k.toLowerCase() === key.toLowerCase()) ?? key;
      node = (node[existing] ??= {}) as Record<string, unknown>;
    }
    const last = keys.at(-1)!;
    node[Object.keys(node).find((k) => k.toLowerCase() === last.toLowerCase()) ?? last] = value;
  }
  const q = ((json['extensions'] as Record<string, unknown> | undefined)?.['queues'] ?? {}) as Record<string, unknown>;
  const num = (key: string, fallback: number) => (q[key] === undefined ? fallback : Number(q[key]));
  const batchSize = num('batchSize', 16);
  const encoding = text(q['messageEncoding'], 'base64').toLowerCase();
  if (encoding !== 'base64' && encoding !== 'none')
    throw new HostStartError([`extensions.queues.messageEncoding must be base64 or none, not '${encoding}'`]);
  return {
    queues: {
      batchSize,
      newBatchThreshold: num('newBatchThreshold', Math.floor(batchSize / 2)),
      maxDequeueCount: num('maxDequeueCount', 5),
      visibilityTimeoutMs: q['visibilityTimeout']
        ? parseTimeSpan(text(q['visibilityTimeout']), 'visibilityTimeout')
        : 0,
      maxPollingIntervalMs: q['maxPollingInterval']
        ? parseTimeSpan(text(q['maxPollingInterval']), 'maxPollingInterval')
        : 60_000,
      messageEncoding: encoding,
    },
    functionTimeoutMs: json['functionTimeout']
      ? parseTimeSpan(text(json['functionTimeout']), 'functionTimeout')
      : undefined,
    logLevel: Object.fromEntries(
      Object.entries(
        ((json['logging'] as Record<string, unknown> | undefined)?.['logLevel'] ?? {}) as Record<string, unknown>,
      ).map(([category, level]) => [category, text(level, 'Information')]),
    ),
  };
}

/** A host.json value as text (numbers too); anything else counts as unset. */
function text(value: unknown, fallback = ''): string {
  return typeof value === 'string' || typeof value === 'number' ? String(value) : fallback;
}
