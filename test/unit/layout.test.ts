/**
 * The layout's rules (CONTRIBUTING.md), checked on the import graph of the sources:
 * functions/ -> shared/ and never back; the concerns of shared/ import each other without a cycle;
 * the product (functions/, shared/, cli/) imports nothing from the local stack, scripts or tests.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

import ts from 'typescript';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '../..');

function sources(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir), { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.relative(ROOT, path.join(e.parentPath, e.name)));
}

/** Repository-relative files a source imports (relative imports only; packages are not followed). */
function importsOf(file: string): string[] {
  const info = ts.preProcessFile(readFileSync(path.join(ROOT, file), 'utf8'), true, true);
  return info.importedFiles
    .map((f) => f.fileName)
    .filter((spec) => spec.startsWith('.'))
    .map((spec) => path.relative(ROOT, path.resolve(ROOT, path.dirname(file), spec)));
}

/** shared/drain/steps/read.ts -> drain; shared/errors.ts -> errors */
const concernOf = (file: string) => file.split('/')[1]!.replace(/\.ts$/, '');

/** Every cycle a depth-first walk of the graph meets, as `a -> b -> a`. */
function cyclesOf(edges: Map<string, Set<string>>): string[] {
  const cycles: string[] = [];
  const state = new Map<string, 'open' | 'done'>();
  const visit = (node: string, trail: string[]) => {
    if (state.get(node) === 'done') return;
    if (state.get(node) === 'open') {
      cycles.push([...trail.slice(trail.indexOf(node)), node].join(' -> '));
      return;
    }
    state.set(node, 'open');
    for (const next of edges.get(node) ?? []) visit(next, [...trail, node]);
    state.set(node, 'done');
  };
  for (const node of edges.keys()) visit(node, []);
  return cycles;
}

describe('the layout', () => {
  const product = [...sources('functions'), ...sources('shared'), ...sources('cli')];

  it('the product imports nothing from the local stack, scripts, examples or tests', () => {
    const wrong = product.flatMap((f) =>
      importsOf(f)
        .filter((i) => /^(localstack|scripts|examples|test)\//.test(i))
        .map((i) => `${f} -> ${i}`),
    );
    expect(wrong).toEqual([]);
  });

  it('shared/ never reaches back into functions/ or cli/', () => {
    const wrong = sources('shared').flatMap((f) =>
      importsOf(f)
        .filter((i) => /^(functions|cli)\//.test(i))
        .map((i) => `${f} -> ${i}`),
    );
    expect(wrong).toEqual([]);
  });

  it('the concerns of shared/ import each other without a cycle (type-only imports included)', () => {
    const edges = new Map<string, Set<string>>();
    for (const f of sources('shared')) {
      const from = concernOf(f);
      for (const i of importsOf(f).filter((i) => i.startsWith('shared/'))) {
        const to = concernOf(i);
        if (to !== from) edges.set(from, (edges.get(from) ?? new Set()).add(to));
      }
    }
    expect(edges.size).toBeGreaterThan(5);
    expect(cyclesOf(edges)).toEqual([]);
  });

  it('no file of the product imports, through others, the file it is imported by (type-only imports included)', () => {
    const edges = new Map<string, Set<string>>();
    for (const f of product)
      edges.set(f.replace(/\.ts$/, ''), new Set(importsOf(f).filter((i) => /^(shared|cli|functions)\//.test(i))));
    expect(edges.size).toBeGreaterThan(50);
    expect(cyclesOf(edges)).toEqual([]);
  });

  it('a function file is a thin registration: it imports @azure/functions and shared/ only', () => {
    for (const f of sources('functions')) {
      const text = readFileSync(path.join(ROOT, f), 'utf8');
      const specs = ts.preProcessFile(text, true, true).importedFiles.map((i) => i.fileName);
      expect(
        specs.filter((s) => !s.startsWith('../shared/') && s !== '@azure/functions'),
        f,
      ).toEqual([]);
      expect(text.split('\n').length, f).toBeLessThan(60);
    }
  });
});

describe('errors', () => {
  it('every error class of the product extends InboxqError (only InboxqError extends Error)', () => {
    const product = [...sources('functions'), ...sources('shared'), ...sources('cli')];
    const plain = product.flatMap((f) =>
      [...readFileSync(path.join(ROOT, f), 'utf8').matchAll(/class (\w+) extends (\w*Error)\b/g)]
        .filter((m) => m[2] === 'Error' && m[1] !== 'InboxqError')
        .map((m) => `${f}: ${m[1]}`),
    );
    expect(plain).toEqual([]);
  });
});
