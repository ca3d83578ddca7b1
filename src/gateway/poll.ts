// Waiting for a child process (nginx, HAProxy) to answer: asked often at first, then less, so that
// the asking does not take the CPU the child needs to start or load its configuration.

/** Resolves true once `ready()` does, or false at `deadline` (ms since the epoch). Pauses grow from 5 ms to `maxPauseMs`. */
export async function pollUntil(ready: () => Promise<boolean>, deadline: number, maxPauseMs: number): Promise<boolean> {
  for (let pause = 5; ; pause = Math.min(pause * 1.5, maxPauseMs)) {
    if (await ready()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, pause));
  }
}
