/**
 * Compiles the app with the local stack and scripts into build/ once per run of the end-to-end
 * tests: the crash tests run the compiled handlers (build/localstack/crash-child.js) in processes
 * they kill, as the Functions host would run them, and the demo test runs build/scripts/demo.js.
 */
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.tools.json'], {
    stdio: 'inherit',
  });
}
