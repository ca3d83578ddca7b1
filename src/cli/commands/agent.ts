// sbx agent run|pipe: the agent container's own commands (see src/gateway/agent-main.ts).
import type { CommandInput } from '../context.ts';
import { exitCodeOf } from '../../core/errors.ts';

export async function run(input: CommandInput): Promise<number | void> {
  const verb = input.command.split(' ')[1];
  const { runAgentDaemon, pipeToControl } = await import('../../gateway/agent-main.ts');
  if (verb === 'pipe') return pipeToControl();
  const gw = await runAgentDaemon().catch((err: unknown) => {
    setTimeout(() => process.exit(exitCodeOf(err)), 200).unref();
    throw err;
  });
  input.io.info(`sbx agent: gateway on http://${gw.state.host}:${gw.state.port} (*.${gw.state.domain})`);
  await new Promise<void>((resolve) => {
    const stop = () => void gw.close().then(resolve);
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  return 0;
}
