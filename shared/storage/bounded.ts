/**
 * Bounds for what goes into a table property. Azure Table Storage holds at most 32K UTF-16 code
 * units in a string property and 1 MiB in an entity, and refuses the whole write past that
 * (PropertyValueTooLarge). Every value that comes from a mail is cut to a bound here before it is
 * written, so no mail can make its own row (or a transaction of a hundred rows) unwritable.
 */

/** At most `max` UTF-16 code units, never ending inside a surrogate pair, and well-formed. */
export function clip(value: string, max: number): string {
  let out = value.length > max ? value.slice(0, max) : value;
  if (out.length > 0) {
    const last = out.charCodeAt(out.length - 1);
    if (last >= 0xd800 && last <= 0xdbff) out = out.slice(0, -1);
  }
  return out.toWellFormed();
}

/**
 * The JSON of a list of strings, at most `maxChars` long: each item clipped to `maxItemChars`, and
 * items dropped from the front (`keep: 'last'`) or the back (`keep: 'first'`) until the JSON fits.
 * JSON escapes can double an item's length (`"` becomes `\\"`), so the bound is on the JSON itself.
 */
export function boundedJsonList(
  items: readonly string[],
  maxChars: number,
  maxItemChars: number,
  keep: 'first' | 'last',
): string {
  const clipped = items.map((i) => clip(i, maxItemChars));
  const ordered = keep === 'last' ? [...clipped].reverse() : clipped;
  const kept: string[] = [];
  let length = 2;
  for (const item of ordered) {
    const cost = JSON.stringify(item).length + (kept.length > 0 ? 1 : 0);
    if (length + cost > maxChars) break;
    kept.push(item);
    length += cost;
  }
  return JSON.stringify(keep === 'last' ? kept.reverse() : kept);
}
