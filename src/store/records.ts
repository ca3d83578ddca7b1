// Frozen records of the store's snapshots, and the JSON text of each, made once per record object:
// a write of a thousand records stringifies only the ones a change made (thawed.ts).

/** Freezes a parse of JSON (plain objects and arrays only) all the way down; frozen parts are skipped. */
export function deepFreeze<T extends object>(value: T): T {
  Object.freeze(value);
  for (const key in value) {
    const v: unknown = value[key];
    if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) deepFreeze(v);
  }
  return value;
}

const texts = new WeakMap<object, string>();

/** The JSON text of a frozen record (kept with it), or `json` kept as its text. */
export function recordJson(record: object, json?: string): string {
  if (json !== undefined) {
    texts.set(record, json);
    return json;
  }
  let text = texts.get(record);
  if (text === undefined) texts.set(record, (text = JSON.stringify(record)));
  return text;
}
