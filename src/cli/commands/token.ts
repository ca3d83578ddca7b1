import type { CommandInput } from '../context.ts';
import { sandboxArgOrPrompt } from '../prompt.ts';

export async function run(input: CommandInput): Promise<void> {
  const ref = await sandboxArgOrPrompt(input, input.args[0] as string | undefined, 'sbx token SANDBOX');
  const sbx = await input.sbx();
  const token = await sbx.token(ref, { rotate: !!input.opts.rotate });
  if (input.opts.json) {
    const { id, name } = await sbx.resolve(ref);
    return input.io.json({ id, name, token });
  }
  input.io.out(token);
}
