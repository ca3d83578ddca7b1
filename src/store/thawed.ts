// What a store update changes: the sandboxes of the store's frozen snapshot, as a map that copies a
// record only when the change reads it. A change to one sandbox of a thousand copies one record,
// and the write reuses the JSON text of the others (records.ts keeps it); records read but left
// as they were stay the snapshot's own objects, so what is keyed by them (compiled policies, the
// route table) stays valid.
import type { SandboxRecord } from '../core/sandbox.ts';
import { deepFreeze, recordJson } from './records.ts';

type Records = Record<string, SandboxRecord>;

export class ThawedRecords {
  /** What the change's code sees: reads, writes, deletes and enumeration all work as on a plain object. */
  readonly map: Records;
  /** Records read, set or added by the change (present), by id. */
  readonly #own = new Map<string, SandboxRecord>();
  /** Ids of the snapshot that the change deleted. */
  readonly #gone = new Set<string>();
  readonly #view: Readonly<Records>;

  constructor(view: Readonly<Records>) {
    this.#view = view;
    const self = this;
    this.map = new Proxy({} as Records, {
      get: (target, key) => (typeof key === 'string' && self.#has(key) ? self.#get(key) : Reflect.get(target, key)),
      set: (target, key, value) => {
        if (typeof key !== 'string') return Reflect.set(target, key, value);
        self.#own.set(key, value as SandboxRecord);
        return true;
      },
      deleteProperty: (target, key) => {
        if (typeof key !== 'string') return Reflect.deleteProperty(target, key);
        self.#own.delete(key);
        if (Object.hasOwn(self.#view, key)) self.#gone.add(key);
        return true;
      },
      has: (target, key) => (typeof key === 'string' && self.#has(key)) || Reflect.has(target, key),
      ownKeys: () => self.#keys(),
      // The snapshot's record until it is read: Object.keys() and `in` copy nothing.
      getOwnPropertyDescriptor: (target, key) =>
        typeof key === 'string' && self.#has(key) ? { value: self.#own.has(key) ? self.#own.get(key) : self.#view[key], writable: true, enumerable: true, configurable: true } : Reflect.getOwnPropertyDescriptor(target, key),
      defineProperty: (target, key, desc) => {
        if (typeof key !== 'string' || !('value' in desc)) return Reflect.defineProperty(target, key, desc);
        self.#own.set(key, desc.value as SandboxRecord);
        return true;
      },
    });
  }

  #inView(id: string): boolean {
    return Object.hasOwn(this.#view, id) && !this.#gone.has(id);
  }

  #has(id: string): boolean {
    return this.#own.has(id) || this.#inView(id);
  }

  /** A record of the snapshot is copied (from its JSON) the first time the change reads it. */
  #get(id: string): SandboxRecord | undefined {
    if (this.#own.has(id)) return this.#own.get(id);
    const copy = JSON.parse(recordJson(this.#view[id]!)) as SandboxRecord;
    this.#own.set(id, copy);
    return copy;
  }

  /**
   * The snapshot's order, then what the change added, as a plain object would list them (one that
   * was deleted and set again comes last).
   */
  #keys(): string[] {
    const keys: string[] = [];
    for (const id in this.#view) if (!this.#gone.has(id)) keys.push(id);
    for (const id of this.#own.keys()) if (!Object.hasOwn(this.#view, id) || this.#gone.has(id)) keys.push(id);
    return keys;
  }

  /**
   * The JSON text of the map after the change, and the frozen records of the next snapshot: the
   * snapshot's own where the change left a record as it was, a frozen copy where it did not.
   */
  serialise(): { json: string; records: Records } {
    const parts: string[] = [];
    const records: Records = {};
    for (const id of this.#keys()) {
      let record: SandboxRecord;
      let json: string | undefined;
      const was = Object.hasOwn(this.#view, id) ? this.#view[id]! : undefined;
      if (!this.#own.has(id)) {
        record = was!;
        json = recordJson(record);
      } else {
        json = JSON.stringify(this.#own.get(id));
        if (json === undefined) continue; // as JSON.stringify leaves out a property set to undefined
        record = was && recordJson(was) === json ? was : deepFreeze(JSON.parse(json) as SandboxRecord);
        recordJson(record, json);
      }
      parts.push(`${JSON.stringify(id)}:${json}`);
      records[id] = record;
    }
    return { json: `{${parts.join(',')}}`, records };
  }
}
