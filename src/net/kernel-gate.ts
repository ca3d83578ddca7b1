// Kernel work on sbx's table runs either as per-sandbox steps side by side (apply, learn, remove)
// or as one run that rewrites many sandboxes at once (restoreAll), alone: such a run reads the
// policies first and writes them later, so a step in between (an update that tightens) would be
// undone by it.

export class KernelGate {
  #running = 0;
  /** Set while a run that must be alone waits for the steps under way or runs. */
  #alone?: Promise<void>;
  #drained?: () => void;

  /** A per-sandbox step: waits while a run is alone, then counts as under way until leave(). */
  async enter(): Promise<void> {
    while (this.#alone) await this.#alone;
    this.#running++;
  }

  leave(): void {
    if (--this.#running === 0) this.#drained?.();
  }

  /** Runs `work` once the steps under way are done, holding new ones back until it is. */
  async alone<T>(work: () => Promise<T>): Promise<T> {
    while (this.#alone) await this.#alone;
    let done!: () => void;
    this.#alone = new Promise<void>((resolve) => (done = resolve));
    try {
      if (this.#running > 0) await new Promise<void>((resolve) => (this.#drained = resolve));
      this.#drained = undefined;
      return await work();
    } finally {
      this.#alone = undefined;
      done();
    }
  }
}
