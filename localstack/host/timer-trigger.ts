/**
 * A timer trigger as the host runs it: an NCRONTAB expression of six fields (seconds first), in
 * UTC; one invocation at a time (an occurrence that comes while the last one still runs is
 * skipped, and missed occurrences are not replayed); `isPastDue` when an occurrence fires late
 * (the process was paused, or the machine slept); `runOnStartup` fires once at start.
 *
 * The real host also keeps the schedule status in Storage (useMonitor) and holds a blob lease so
 * one instance of the app runs the timer; the local host is one instance and keeps the status in
 * memory.
 */
import { CronExpressionParser } from 'cron-parser';

import type { Invoke, TriggerLog } from './invoke';
import { HostStartError } from './settings';

/** An occurrence fired this much later than scheduled is past due. */
const PAST_DUE_MS = 1000;
const MAX_WAIT_MS = 3_600_000;

export interface TimerTriggerOptions {
  functionName: string;
  bindingName: string;
  schedule: string;
  runOnStartup: boolean;
  invoke: Invoke;
  log: TriggerLog;
  now?: () => number;
}

/** The host's refusal of an expression that is not six NCRONTAB fields. */
export function ncrontabProblem(expression: string): string | undefined {
  const fields = expression.trim().split(/\s+/);
  const invalid = `The schedule expression '${expression}' was not found to be a valid CRON expression (six fields, seconds first).`;
  if (fields.length !== 6) return invalid;
  try {
    CronExpressionParser.parse(expression, { tz: 'UTC' });
    return undefined;
  } catch {
    return invalid;
  }
}

export class TimerTrigger {
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<void> | undefined;
  #stopped = false;
  #last: Date | undefined;
  readonly #now: () => number;

  constructor(private readonly o: TimerTriggerOptions) {
    const problem = ncrontabProblem(o.schedule);
    if (problem) throw new HostStartError([problem]);
    this.#now = o.now ?? Date.now;
  }

  start(): void {
    if (this.o.runOnStartup) void this.fire(new Date(this.#now()), false);
    this.arm();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  /** The next occurrence after now. */
  next(after = this.#now()): Date {
    return CronExpressionParser.parse(this.o.schedule, { tz: 'UTC', currentDate: new Date(after) })
      .next()
      .toDate();
  }

  /** Waits for the next occurrence (in steps of at most an hour: a timer can't wait longer than 24.8 days at once). */
  private arm(due = this.next()): void {
    if (this.#stopped) return;
    const wait = due.getTime() - this.#now();
    if (wait > MAX_WAIT_MS) {
      this.#timer = setTimeout(() => this.arm(due), MAX_WAIT_MS);
      return;
    }
    this.#timer = setTimeout(
      () => {
        const late = this.#now() - due.getTime() > PAST_DUE_MS;
        void this.fire(due, late);
        this.arm();
      },
      Math.max(0, wait),
    );
  }

  /** For tools that step through the app: one occurrence now, its handler's value returned, a failure thrown. */
  async fireNow(): Promise<unknown> {
    const { result } = await this.o.invoke(this.request(new Date(this.#now()), false));
    return result;
  }

  /** The timer input the host sends: schedule, schedule status, isPastDue. */
  private request(scheduled: Date, isPastDue: boolean) {
    const status = {
      Last: (this.#last ?? new Date(0)).toISOString(),
      Next: this.next(scheduled.getTime()).toISOString(),
      LastUpdated: new Date(this.#now()).toISOString(),
    };
    const timer = { Schedule: { AdjustForDST: true }, ScheduleStatus: status, IsPastDue: isPastDue };
    return { inputData: [{ name: this.o.bindingName, data: { json: JSON.stringify(timer) } }], triggerMetadata: {} };
  }

  private async fire(scheduled: Date, isPastDue: boolean): Promise<void> {
    if (this.#running) {
      this.o.log(
        'warn',
        `Timer '${this.o.functionName}' is still running; the occurrence at ${scheduled.toISOString()} is skipped`,
      );
      return;
    }
    this.#running = this.o
      .invoke(this.request(scheduled, isPastDue))
      .then(
        () => undefined,
        (err: unknown) => {
          this.o.log(
            'error',
            `Executed 'Functions.${this.o.functionName}' (Failed): ${err instanceof Error ? err.message : String(err)}`,
          );
        },
      )
      .finally(() => {
        this.#last = scheduled;
        this.#running = undefined;
      });
    await this.#running;
  }
}
