// sbx gateway run|start|stop|status
import type { CommandInput } from '../context.ts';
import { exitCodeOf } from '../../core/errors.ts';

export async function run(input: CommandInput): Promise<number | void> {
  const { io, opts } = input;
  const sbx = await input.sbx();
  const verb = input.command.split(' ')[1];
  if (verb === 'run') {
    // The daemon itself: the one command that is not a call of the library's API.
    const { runGateway } = await import('../../gateway/main.ts');
    const { LocalSbx } = await import('../../api/local-sbx.ts');
    // The daemon does the work itself (it is where others delegate to).
    const gw = await runGateway(new LocalSbx({ home: sbx.home, delegate: false })).catch((err: unknown) => {
      // A start that failed half-way may leave a handle open (the store watch): end the process
      // once main has reported the error, or whoever started it waits its whole timeout for it.
      setTimeout(() => process.exit(exitCodeOf(err)), 200).unref();
      throw err;
    });
    io.info(`sbx gateway on ${gw.state.tls ? 'https' : 'http'}://${gw.state.host}:${gw.state.port} (*.${gw.state.domain}); Ctrl-C stops it`);
    await new Promise<void>((resolve) => {
      // Not once(): the store's atomic writes hook the same signals and raise them again after
      // their own cleanup, which would kill the process before close() is done (nginx and the
      // listener guard left behind). close() runs once however often it is asked.
      const stop = () => void gw.close().then(resolve);
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    return 0;
  }
  if (verb === 'start') await sbx.ensureGateway();
  if (verb === 'stop') {
    const wasRunning = await sbx.stopGateway();
    if (!opts.json) {
      if (io.isTTY) io.success(wasRunning ? 'Gateway stopped' : 'The gateway was not running');
      return;
    }
  }
  const status = await sbx.gatewayStatus();
  if (opts.json) return io.json(status);
  if (!status.running) {
    io.out(io.isTTY ? 'gateway: not running (sbx gateway start)' : 'stopped');
    return verb === 'status' ? 0 : 1;
  }
  io.details([
    ['status', io.isTTY ? io.color.green('running') : 'running'],
    ['pid', String(status.pid)],
    ['listen', `${status.host}:${status.port}`],
    ['engine', `${status.engine ?? 'node'}${status.engine === 'nginx' && status.h2c ? (status.h2cBy === 'haproxy' ? ' (h2c too, through HAProxy)' : ' (h2c too)') : ''}`],
    ['domain', status.domain!],
    ['urls', `${status.tls ? 'https' : 'http'}://<port>-<sandbox>.${status.domain}:${status.port}/`],
    ...(status.dnsUpstream ? [['dns upstream', status.dnsUpstream] as [string, string]] : []),
    ...(status.egressUser ? [['egress user', status.egressUser] as [string, string]] : []),
    ...(status.networkLog ? [['network log', status.networkLog] as [string, string]] : []),
    ['log', status.agent ? `${status.log} (in the agent: docker logs ${status.agent})` : status.log],
    ...(status.agent ? [['agent', status.agent] as [string, string]] : []),
  ]);
}
