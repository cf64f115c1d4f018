/**
 * A reply's Markdown as the HTML part of the mail: rendered by markdown-it (CommonMark and GFM
 * tables; raw HTML in the Markdown is shown as text, never passed through), then sanitized by
 * sanitize-html with an allowlist, which also gives each element a simple inline style. Outlook
 * (Word's HTML engine) ignores <style> blocks and classes in many versions; inline styles on each
 * element are what it reads.
 */
import MarkdownIt from 'markdown-it';
import sanitizeHtml from 'sanitize-html';

const FONT = "'Segoe UI',Calibri,Arial,sans-serif";
const MONO = "Consolas,'Courier New',monospace";
const BORDER = '1px solid #d0d7de';

/** The inline style each element gets. */
export const INLINE_STYLES: Record<string, string> = {
  p: 'margin:0 0 12px 0',
  h1: 'font-size:22px;font-weight:600;margin:18px 0 8px 0',
  h2: 'font-size:18px;font-weight:600;margin:16px 0 8px 0',
  h3: 'font-size:16px;font-weight:600;margin:14px 0 6px 0',
  h4: 'font-size:14px;font-weight:600;margin:12px 0 6px 0',
  h5: 'font-size:14px;font-weight:600;margin:12px 0 6px 0',
  h6: 'font-size:14px;font-weight:600;margin:12px 0 6px 0',
  a: 'color:#0563c1;text-decoration:underline',
  ul: 'margin:0 0 12px 0;padding-left:24px',
  ol: 'margin:0 0 12px 0;padding-left:24px',
  li: 'margin:0 0 4px 0',
  blockquote: `margin:0 0 12px 0;padding:0 12px;border-left:4px solid #d0d7de;color:#57606a`,
  pre: `margin:0 0 12px 0;padding:12px;background-color:#f6f8fa;font-family:${MONO};font-size:13px;white-space:pre-wrap`,
  code: `font-family:${MONO};font-size:13px;background-color:#f6f8fa`,
  table: 'border-collapse:collapse;margin:0 0 12px 0',
  th: `border:${BORDER};padding:6px 10px;background-color:#f6f8fa;font-weight:600;text-align:left`,
  td: `border:${BORDER};padding:6px 10px`,
  hr: 'border:0;border-top:1px solid #d0d7de;margin:16px 0',
  img: 'max-width:100%',
};

/** What a link and an image may point at: absolute URLs only (anchored, fixed prefixes: linear). */
const ABSOLUTE_LINK = /^(https?:\/\/[^/\s]|mailto:)/i;
const ABSOLUTE_IMAGE = /^https:\/\/[^/\s]/i;

const markdown = new MarkdownIt({ html: false, linkify: true, typographer: false });

const cssValue = [/^[\w\s#.,'"()%:/-]+$/];
const allowedStyleProps = new Set(
  Object.values(INLINE_STYLES).flatMap((style) => style.split(';').map((d) => d.slice(0, d.indexOf(':')))),
);

const SANITIZE: sanitizeHtml.IOptions = {
  allowedTags: [
    'p',
    'br',
    'h1',
    'h2',
    'h3',
    'h4',
    'h5',
    'h6',
    'a',
    'strong',
    'em',
    's',
    'del',
    'ul',
    'ol',
    'li',
    'blockquote',
    'pre',
    'code',
    'table',
    'thead',
    'tbody',
    'tr',
    'th',
    'td',
    'hr',
    'img',
    'div',
  ],
  allowedAttributes: {
    '*': ['style'],
    a: ['href', 'title'],
    img: ['src', 'alt', 'title'],
    ol: ['start'],
  },
  allowedSchemes: ['https', 'http', 'mailto'],
  allowedSchemesByTag: { img: ['https'] },
  // Only absolute URLs: `//host/x` and `/x` would resolve against whatever the mail client decides.
  allowProtocolRelative: false,
  // An image whose source is not absolute https is dropped (its alt text with it).
  exclusiveFilter: (frame) => frame.tag === 'img' && !ABSOLUTE_IMAGE.test(frame.attribs['src'] ?? ''),
  allowedStyles: { '*': Object.fromEntries([...allowedStyleProps, 'text-align'].map((p) => [p, cssValue])) },
  transformTags: Object.fromEntries(
    Object.entries(INLINE_STYLES).map(([tag, style]) => [
      tag,
      (tagName: string, attribs: sanitizeHtml.Attributes) => {
        // Keep what markdown-it sets itself (a table column's text-align), after the house style.
        const own = tag === 'th' || tag === 'td' ? (attribs['style'] ?? '') : '';
        const house = own.includes('text-align') ? style.replace(/;?text-align:[^;]*/, '') : style;
        const kept = { ...attribs };
        // A link that is not absolute http, https or mailto keeps its text and loses its target.
        if (tag === 'a' && !ABSOLUTE_LINK.test(kept['href'] ?? '')) delete kept['href'];
        return { tagName, attribs: { ...kept, style: own ? `${house};${own}` : house } };
      },
    ]),
  ),
};

/** The HTML part of a mail whose text part is `source` (Markdown). */
export function renderMarkdown(source: string): string {
  const body = sanitizeHtml(markdown.render(source), SANITIZE);
  return [
    '<!DOCTYPE html>',
    '<html><head><meta http-equiv="Content-Type" content="text/html; charset=utf-8"></head>',
    `<body><div style="font-family:${FONT};font-size:14px;line-height:1.5;color:#1f2328">`,
    body.trim(),
    '</div></body></html>',
    '',
  ].join('\n');
}
