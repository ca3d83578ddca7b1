// Docker's view of this home's containers, kept by the gateway between questions. A list of every
// container of the home grows with their number (about 150 ms for 1,000 here), so after one list
// only the containers that Docker reported a change of, or that are new, are asked about again.
// The fast path reads it on every sync; `sbx ls` and `sbx inspect` read it through the daemon.
import { objectNames } from '../core/sandbox.ts';
import type { ContainerSummary, Runtime } from '../runtime/docker.ts';

/** How long a full list of the home's containers is trusted (Docker events keep it fresh meanwhile). */
const LIST_TRUSTED_MS = 30_000;
/** More unknown containers than this in one question: one list is cheaper than an inspect each. */
const MOST_INSPECTS = 16;

export class ContainerView {
  readonly #runtime: Pick<Runtime, 'listSandboxContainers' | 'inspectContainer'>;
  readonly #home: string;
  /** By container name; undefined: there is none. */
  #containers?: Map<string, ContainerSummary | undefined>;
  #listedAt = 0;
  /** Counts Docker's reports: an answer asked for before one may predate it, and is not kept. */
  #changes = 0;
  /** Docker's event stream is up: only while it is does a kept answer stay true. */
  #eventsUp = false;

  constructor(runtime: Pick<Runtime, 'listSandboxContainers' | 'inspectContainer'>, home: string) {
    this.#runtime = runtime;
    this.#home = home;
  }

  /** Docker reported a change of this sandbox's container (start, die, pause...), or sbx made one: asked again. */
  changed(id: string): void {
    this.#changes++;
    this.#containers?.delete(objectNames(id).container);
  }

  /** Any container may have changed: Docker is asked again about all of them. */
  forget(): void {
    this.#changes++;
    this.#containers = undefined;
  }

  /** Docker's event stream came up or broke: either way, what was kept may be out of date. */
  trustEvents(up: boolean): void {
    this.#eventsUp = up;
    this.forget();
  }

  /**
   * What Docker says of these containers (by name): from what it said before, asking only about
   * the unknown. Throws what the engine throws. The map may be the kept one: read it at once.
   */
  async states(names: string[]): Promise<ReadonlyMap<string, ContainerSummary | undefined>> {
    const changes = this.#changes;
    try {
      const known = this.#containers;
      const unknown = known ? names.filter((n) => !known.has(n)) : names;
      if (!known || unknown.length > MOST_INSPECTS || Date.now() - this.#listedAt > LIST_TRUSTED_MS) {
        const listedAt = Date.now();
        const listed: Map<string, ContainerSummary | undefined> = await this.#runtime.listSandboxContainers(this.#home);
        if (changes === this.#changes && this.#eventsUp) [this.#containers, this.#listedAt] = [listed, listedAt];
        return listed;
      }
      const found = await Promise.all(unknown.map((n) => this.#runtime.inspectContainer(n)));
      const answers = changes === this.#changes ? known : new Map(known);
      unknown.forEach((n, i) => answers.set(n, found[i]));
      return answers;
    } catch (err) {
      this.#containers = undefined;
      throw err;
    }
  }
}
