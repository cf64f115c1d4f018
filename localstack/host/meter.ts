/**
 * What the local host did, invocation by invocation, for the two things the platform bills by it:
 * Flex Consumption's execution time (flex-billing.ts) and Application Insights' records
 * (app-insights.ts). Each invocation: its function and trigger, when it started and ended, whether
 * it succeeded, and the level and category of every line it logged (never the line itself).
 *
 * With the setting LOCALHOST_INVOCATION_LOG=<file>, each record is also appended to the file as a
 * line of JSON, for a tool that runs the host as a process of its own (the benchmark).
 */
import { appendFileSync } from 'node:fs';

export interface LoggedLine {
  /** What the programming model says: `user` for the function's own lines (context.log), `system` for its own. */
  category: string;
  level: string;
}

export interface InvocationRecord {
  function: string;
  trigger: 'timer' | 'queue';
  /** Epoch ms. */
  start: number;
  end: number;
  succeeded: boolean;
  logs: LoggedLine[];
}

export class InvocationMeter {
  readonly records: InvocationRecord[] = [];

  constructor(private readonly file: string | undefined) {}

  add(record: InvocationRecord): void {
    this.records.push(record);
    if (this.file) appendFileSync(this.file, `${JSON.stringify(record)}\n`);
  }
}

/** The records of a file LOCALHOST_INVOCATION_LOG wrote. */
export function readInvocationLog(text: string): InvocationRecord[] {
  return text
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as InvocationRecord);
}
