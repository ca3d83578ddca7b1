// Reads the Debian mirror the machine's apt already uses, so image builds never hard-code a host
// (pure: takes file contents, returns the mirror URI).

export interface AptSource {
  uri: string;
  suites: string[];
}

/** Parses both one-line (sources.list) and deb822 (*.sources) formats. */
export function parseAptSources(text: string, deb822: boolean): AptSource[] {
  if (!deb822) {
    const out: AptSource[] = [];
    for (const raw of text.split('\n')) {
      const line = raw.replace(/#.*/, '').trim();
      const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)/.exec(line);
      if (m) out.push({ uri: m[1]!, suites: [m[2]!] });
    }
    return out;
  }
  return text
    .split(/\n\s*\n/)
    .map((stanza) => {
      const field = (name: string) => new RegExp(`^${name}:\\s*(.+)$`, 'mi').exec(stanza)?.[1]?.trim();
      if (!(field('Types') ?? '').split(/\s+/).includes('deb')) return undefined;
      if ((field('Enabled') ?? 'yes').toLowerCase() === 'no') return undefined;
      const uri = field('URIs')?.split(/\s+/)[0];
      return uri ? { uri, suites: (field('Suites') ?? '').split(/\s+/).filter(Boolean) } : undefined;
    })
    .filter((s): s is AptSource => !!s);
}

/** The first source that carries the release itself (not its -security or -updates suites). */
export function pickMirror(sources: readonly AptSource[], suite: string): string | undefined {
  return sources.find((s) => s.suites.includes(suite) && !/security/.test(s.uri))?.uri;
}
