/**
 * Compiles the project once per test run: the crash tests run the compiled handlers
 * (dist/localstack/crash-child.js) in processes they kill, as the Functions host would run them.
 */
import { execFileSync } from 'node:child_process';

export default function setup(): void {
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json'], { stdio: 'inherit' });
}
