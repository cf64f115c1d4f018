import { describe, expect, it } from 'vitest';

import { renderMarkdown } from '../../shared/reply/markdown';

describe('Markdown to HTML for a reply', () => {
  it('renders tables, lists, code and links with inline styles, in a styled wrapper', () => {
    const html = renderMarkdown(
      '## Plan\n\n1. Book\n2. Pay\n\n| a | b |\n|---|:-:|\n| 1 | 2 |\n\n`x = 1`\n\n```\nline\n```\n\nsee https://example.com/x',
    );
    expect(html).toMatch(/^<!DOCTYPE html>/);
    expect(html).toContain(
      '<div style="font-family:\'Segoe UI\',Calibri,Arial,sans-serif;font-size:14px;line-height:1.5;color:#1f2328">',
    );
    expect(html).toContain('<h2 style="font-size:18px;font-weight:600;margin:16px 0 8px 0">Plan</h2>');
    expect(html).toMatch(/<ol style="[^"]+">\s*<li style="margin:0 0 4px 0">Book<\/li>/);
    expect(html).toMatch(
      /<th style="border:1px solid #d0d7de;padding:6px 10px;background-color:#f6f8fa;font-weight:600;text-align:center">b<\/th>/,
    );
    expect(html).toMatch(/<code style="font-family:Consolas[^"]*">x = 1<\/code>/);
    expect(html).toMatch(/<pre style="[^"]*white-space:pre-wrap"><code[^>]*>line\n<\/code><\/pre>/);
    expect(html).toContain(
      '<a href="https://example.com/x" style="color:#0563c1;text-decoration:underline">https://example.com/x</a>',
    );
  });

  it.each([
    [
      'raw HTML is text',
      '<img src=x onerror=alert(1)><b>bold</b>',
      '&lt;img src=x onerror=alert(1)&gt;&lt;b&gt;bold&lt;/b&gt;',
    ],
    ['javascript: links are not links', '[click](javascript:alert(1))', '[click](javascript:alert(1))'],
    ['data: links are not links', '[x](data:text/html;base64,PHNjcmlwdD4=)', '[x](data:text/html;base64,PHNjcmlwdD4=)'],
    [
      'http images are dropped, https kept',
      '![a](http://x.example/a.png) ![b](https://x.example/b.png)',
      '<img src="https://x.example/b.png" alt="b" style="max-width:100%" />',
    ],
    [
      'protocol-relative images are dropped',
      'x ![t](//tracker.example/p.gif) y',
      '<p style="margin:0 0 12px 0">x  y</p>',
    ],
    [
      'relative images are dropped',
      'x ![t](/p.gif) ![u](p.gif) ![v](cid:logo) y',
      '<p style="margin:0 0 12px 0">x    y</p>',
    ],
    [
      'protocol-relative links keep their text only',
      '[site](//evil.example/x)',
      '<a style="color:#0563c1;text-decoration:underline">site</a>',
    ],
    [
      'relative links keep their text only',
      '[a](/x) [b](x.html) [c](#top)',
      '<a style="color:#0563c1;text-decoration:underline">a</a>',
    ],
    [
      'mailto links stay',
      '[mail](mailto:a@b.example)',
      '<a href="mailto:a@b.example" style="color:#0563c1;text-decoration:underline">mail</a>',
    ],
  ])('%s', (_name, markdown, expected) => {
    const html = renderMarkdown(markdown);
    expect(html).toContain(expected);
    expect(html).not.toMatch(
      /<script|<[a-z]+ [^>]*onerror|href="javascript|href="data|src="http:|src="\/|href="\/|href="[a-z]+\.html|href="#|src="cid/i,
    );
  });
});
