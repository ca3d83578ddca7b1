import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '../../src/core/errors.ts';
import { parseSshHost, sshArgs } from '../../src/runtime/ssh-dial.ts';

describe('ssh:// DOCKER_HOST', () => {
  it('takes user, host and port, as the docker CLI does; a trailing slash is no path', () => {
    assert.deepEqual(parseSshHost('ssh://root@10.0.0.5:2222'), { user: 'root', host: '10.0.0.5', port: '2222' });
    assert.deepEqual(parseSshHost('ssh://build-box'), { host: 'build-box' });
    assert.deepEqual(parseSshHost('ssh://me@build-box/'), { user: 'me', host: 'build-box' });
    assert.deepEqual(parseSshHost('ssh://[fd00::5]:22'), { host: 'fd00::5', port: '22' });
    assert.deepEqual(parseSshHost('ssh://first%2Elast@h'), { user: 'first.last', host: 'h' });
  });

  it('builds the docker CLI connhelper command line, never prompting; -- keeps the host from being an option', () => {
    assert.deepEqual(sshArgs({ user: 'root', host: '10.0.0.5', port: '2222' }), ['-o', 'ConnectTimeout=30', '-T', '-o', 'BatchMode=yes', '-l', 'root', '-p', '2222', '--', '10.0.0.5', 'docker', 'system', 'dial-stdio']);
    assert.deepEqual(sshArgs({ host: '-oProxyCommand=x' }).slice(-5), ['--', '-oProxyCommand=x', 'docker', 'system', 'dial-stdio']);
  });

  for (const [url, why] of [
    ['ssh://', /no host/],
    ['ssh://root@', /not a URL/],
    ['ssh://host/var/run/docker.sock', /a path \(\/var\/run\/docker\.sock\) is not supported/],
    ['ssh://me:secret@host', /password/],
    ['ssh://host?x=1', /no query/],
    ['ssh://host:notaport', /not a URL/],
  ] as const) {
    it(`refuses ${url} with one usage line (exit 2)`, () => {
      assert.throws(() => parseSshHost(url), (err: unknown) => {
        assert.ok(err instanceof UsageError);
        assert.equal(err.exitCode, 2);
        assert.match(err.message, why);
        assert.ok(err.message.startsWith(`DOCKER_HOST=${url}: `), err.message);
        assert.match(err.message, /expected ssh:\/\/\[user@\]host\[:port\]$/);
        assert.ok(!err.message.includes('\n'));
        return true;
      });
    });
  }
});

describe('ssh:// targets that ssh could misread', () => {
  for (const url of ['ssh://-oProxyCommand=x@h', 'ssh://u@-oProxyCommand=x', 'ssh://u%0Aa@h', 'ssh://u%20a@h', 'ssh://%ZZ@h', 'ssh://u%25n@h']) {
    it(`${url}: a usage error`, () => {
      assert.throws(() => parseSshHost(url), (err: Error) => err instanceof UsageError && err.message.startsWith(`DOCKER_HOST=${url}: `));
    });
  }
});
