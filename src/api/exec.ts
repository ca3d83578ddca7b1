// Running a command in a sandbox: through the engine's API, from wherever the client is (the
// container is found by the backend; the bytes go straight through the engine).
import type { Readable, Writable } from 'node:stream';
import { RuntimeError, SbxError, UsageError } from '../core/errors.ts';
import { toEnv } from '../core/options.ts';
import type { Runtime } from '../runtime/docker.ts';

export interface ExecSandboxOptions {
  command: string[];
  env?: readonly string[] | Record<string, string>;
  workdir?: string;
  tty?: boolean;
  stdin?: Readable;
  stdout?: Writable;
  stderr?: Writable;
  detach?: boolean;
  size?: { rows: number; columns: number };
  onStart?: (control: { resize(size: { rows: number; columns: number }): void }) => void;
}

export function checkCommand(options: ExecSandboxOptions): void {
  if (options.command.length === 0) throw new UsageError('no command given: put it after --, e.g. sbx exec my-box -- ls -l');
}

/** `target.env`: the sandbox's own env when its container could not get it (a warm-pool claim); the exec's wins. */
export async function execInSandbox(runtime: Runtime, target: { name: string; container: string; env?: Record<string, string> }, options: ExecSandboxOptions): Promise<number> {
  try {
    return await runtime.exec(target.container, {
      cmd: options.command,
      env: { ...target.env, ...toEnv(options.env) },
      workdir: options.workdir,
      tty: options.tty,
      stdin: options.stdin,
      stdout: options.stdout ?? process.stdout,
      stderr: options.stderr ?? process.stderr,
      detach: options.detach,
      size: options.size,
      onStart: options.onStart,
    });
  } catch (err) {
    if (err instanceof SbxError) throw err;
    throw new RuntimeError(`exec in ${target.name} failed: ${(err as Error).message}`, { cause: err });
  }
}
