/**
 * A drain or reply run in a process of its own that kills itself (SIGKILL: no cleanup, no finally)
 * at a named step boundary: crash injection for the exactly-once tests.
 *
 *   node build/localstack/crash-child.js '<json>'
 *   json: { kind: 'drain' | 'reply', settings: {...}, dieAt?: step, occurrence?: n, dieAfterMs?: ms, nowOffsetMs?: ms, reply?: {...} }
 *
 * `dieAfterMs` kills it at a moment rather than a step: wherever the run happens to be.
 *
 * Prints one JSON line with the outcome when it lives to the end.
 */
import { drainMailbox, type DrainStep } from '../shared/drain/drain';
import { type ReplyStep, sendReply } from '../shared/reply/reply';
import { memoryLogger } from '../shared/telemetry/log';
import { runtimeFor } from './runtime';

interface ChildOrder {
  kind: 'drain' | 'reply';
  settings: Record<string, string | undefined>;
  dieAt?: DrainStep | ReplyStep;
  occurrence?: number;
  dieAfterMs?: number;
  nowOffsetMs?: number;
  reply?: unknown;
}

async function main(): Promise<void> {
  const started = Date.now();
  const order = JSON.parse(process.argv[2] ?? '{}') as ChildOrder;
  if (order.dieAfterMs !== undefined) setTimeout(() => process.kill(process.pid, 'SIGKILL'), order.dieAfterMs);
  const rt = runtimeFor(order.settings);
  const now = () => Date.now() + (order.nowOffsetMs ?? 0);
  let seen = 0;
  const onStep = (step: string) => {
    if (step === order.dieAt && ++seen === (order.occurrence ?? 1)) process.kill(process.pid, 'SIGKILL');
  };
  const log = memoryLogger();
  if (order.kind === 'drain') {
    const summary = await drainMailbox({ ...rt, log, now, onStep });
    process.stdout.write(
      `${JSON.stringify({ counts: summary.counts, stoppedBecause: summary.stoppedBecause, elapsedMs: Date.now() - started })}\n`,
    );
  } else {
    const result = await sendReply(order.reply, { ...rt, log, now, onStep });
    process.stdout.write(`${JSON.stringify(result)}\n`);
  }
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`${err.name}: ${err.message}\n`);
    process.exit(1);
  },
);
