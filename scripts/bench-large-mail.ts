/**
 * Child of `npm run bench`: drains the mailbox the parent seeded with one mail with a 50 MB
 * attachment, sampling its own resident memory. Prints {"peakGrowth", "size"} (bytes) as its last line.
 */
import { runtimeFor } from '../localstack/runtime';
import { drainMailbox } from '../shared/drain/drain';
import { silentLogger } from '../shared/telemetry/log';

async function main(): Promise<void> {
  const { settings, size } = JSON.parse(process.argv[2]!) as { settings: Record<string, string>; size: number };
  const rt = runtimeFor(settings);
  // The mail is already in the inbox: warm only what a run touches before its first mail.
  await rt.tokens.getToken();
  for (const q of ['tasks']) await rt.storage.queue(q);
  global.gc?.();
  await new Promise((r) => setTimeout(r, 200));
  global.gc?.();
  const base = process.memoryUsage().rss;
  let peak = base;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  const summary = await drainMailbox({ ...rt, log: silentLogger });
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  if (summary.counts.queued !== 1) throw new Error(`expected one queued mail, got ${JSON.stringify(summary.counts)}`);
  process.stdout.write(`${JSON.stringify({ peakGrowth: peak - base, size })}\n`);
}

main().then(
  () => process.exit(0),
  (err: Error) => {
    process.stderr.write(`${err.stack ?? err.message}\n`);
    process.exit(1);
  },
);
