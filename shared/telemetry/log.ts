/**
 * A small structured logger. In Functions it writes through the InvocationContext so each line is
 * an Application Insights trace of that invocation; elsewhere (CLI, demo, tests) it writes wherever
 * it is told.
 *
 * Properties are identifiers and counts only: mailbox, task id, Message-ID, UID, verdict reasons.
 * Never a token, a secret, a mail body or a subject line: callers pass ids, and `safeProps` drops
 * any property whose name suggests content.
 */

export type LogProps = Record<string, string | number | boolean | null | undefined | readonly string[]>;

export interface Logger {
  info(message: string, props?: LogProps): void;
  warn(message: string, props?: LogProps): void;
  error(message: string, props?: LogProps): void;
}

const FORBIDDEN = /token|secret|password|body|text|html|content|subject|authorization/i;

export function safeProps(props: LogProps | undefined): LogProps | undefined {
  if (!props) return undefined;
  const out: LogProps = {};
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined) continue;
    out[key] = FORBIDDEN.test(key) ? '[withheld]' : value;
  }
  return out;
}

export function formatLine(message: string, props?: LogProps): string {
  const safe = safeProps(props);
  return safe && Object.keys(safe).length > 0 ? `${message} ${JSON.stringify(safe)}` : message;
}

export interface LogSink {
  info(line: string): void;
  warn(line: string): void;
  error(line: string): void;
}

export function createLogger(sink: LogSink): Logger {
  return {
    info: (m, p) => sink.info(formatLine(m, p)),
    warn: (m, p) => sink.warn(formatLine(m, p)),
    error: (m, p) => sink.error(formatLine(m, p)),
  };
}

/** A logger that keeps its lines, for tests and for the CLI's --verbose. */
export function memoryLogger(): Logger & { lines: { level: string; line: string }[] } {
  const lines: { level: string; line: string }[] = [];
  return {
    lines,
    info: (m, p) => lines.push({ level: 'info', line: formatLine(m, p) }),
    warn: (m, p) => lines.push({ level: 'warn', line: formatLine(m, p) }),
    error: (m, p) => lines.push({ level: 'error', line: formatLine(m, p) }),
  };
}

export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
