// Typed errors with a message written for the user. The CLI maps them to exit codes in one
// place (src/cli/main.ts); library users can switch on `exitCode` or `instanceof`.

export class SbxError extends Error {
  readonly exitCode: number = 1;
  /**
   * What else went wrong on the way out, for the user to act on: e.g. a failed create whose
   * rollback could not remove everything (what is left stays recorded; sbx rm retries). The CLI
   * prints each as a `warning:` line after the error.
   */
  warnings: string[] = [];
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Bad flags, arguments or values: exit 2. */
export class UsageError extends SbxError {
  override readonly exitCode = 2;
}

/** A sandbox (or other named object) that does not exist: exit 3. */
export class NotFoundError extends SbxError {
  override readonly exitCode = 3;
}

/** Something failed while doing the work (engine, kernel, files): exit 1. */
export class RuntimeError extends SbxError {
  override readonly exitCode = 1;
}

/**
 * A removal that could not finish: `left` names what is still there (container, network, egress
 * rules). The sandbox stays in the store with status `removing`; sbx rm (and the gateway, when it
 * starts) retries. Exit 1.
 */
export class RemovalError extends RuntimeError {
  readonly sandbox: { id: string; name: string };
  readonly left: string[];
  constructor(message: string, sandbox: { id: string; name: string }, left: string[], options?: { cause?: unknown }) {
    super(message, options);
    this.sandbox = sandbox;
    this.left = left;
  }
}

/** The user interrupted (Ctrl-C) a command that has been rolled back: exit 130 like a shell. */
export class InterruptedError extends SbxError {
  override readonly exitCode = 130;
}

export function exitCodeOf(err: unknown): number {
  return err instanceof SbxError ? err.exitCode : 1;
}

/** The error class for an exit code, e.g. for an error that crossed a process boundary. */
export function errorForExitCode(exitCode: number, message: string, warnings: readonly string[] = []): SbxError {
  const err =
    exitCode === 2 ? new UsageError(message)
    : exitCode === 3 ? new NotFoundError(message)
    : exitCode === 130 ? new InterruptedError(message)
    : new RuntimeError(message);
  err.warnings.push(...warnings);
  return err;
}

/** `err` with a warning added (an SbxError keeps its class; anything else becomes a RuntimeError). */
export function withWarning(err: unknown, warning: string): SbxError {
  const e = err instanceof SbxError ? err : new RuntimeError(err instanceof Error ? err.message : String(err), { cause: err });
  e.warnings.push(warning);
  return e;
}
