// Typed errors with a message written for the user. The CLI maps them to exit codes in one
// place (src/cli/main.ts); library users can switch on `exitCode` or `instanceof`.

export class SbxError extends Error {
  readonly exitCode: number = 1;
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

/** The user interrupted (Ctrl-C) a command that has been rolled back: exit 130 like a shell. */
export class InterruptedError extends SbxError {
  override readonly exitCode = 130;
}

export function exitCodeOf(err: unknown): number {
  return err instanceof SbxError ? err.exitCode : 1;
}

/** The error class for an exit code, e.g. for an error that crossed a process boundary. */
export function errorForExitCode(exitCode: number, message: string): SbxError {
  switch (exitCode) {
    case 2:
      return new UsageError(message);
    case 3:
      return new NotFoundError(message);
    case 130:
      return new InterruptedError(message);
    default:
      return new RuntimeError(message);
  }
}
