// The last resort of main.ts: a system error no sbx code put in its words is said in plain words.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { systemMessage } from '../../src/cli/main.ts';
import { RuntimeError } from '../../src/core/errors.ts';

const sys = (message: string, fields: object) => Object.assign(new Error(message), fields) as NodeJS.ErrnoException;

describe('system errors in plain words', () => {
  it('mkdir EEXIST', () =>
    assert.equal(systemMessage(sys("EEXIST: file already exists, mkdir '/x/y'", { code: 'EEXIST', syscall: 'mkdir', path: '/x/y' })), 'could not mkdir /x/y: file already exists (EEXIST)'));
  it('listen EADDRINUSE (no path)', () =>
    assert.equal(systemMessage(sys('listen EADDRINUSE: address already in use 127.0.0.1:80', { code: 'EADDRINUSE', syscall: 'listen' })), 'could not listen: address already in use 127.0.0.1:80 (EADDRINUSE)'));
  it('sbx errors and errors without a syscall keep their message', () => {
    assert.equal(systemMessage(Object.assign(new RuntimeError('x'), { code: 'EACCES', syscall: 'open' }) as unknown as NodeJS.ErrnoException), undefined);
    assert.equal(systemMessage(sys('Lock file is already being held', { code: 'ELOCKED' })), undefined);
  });
});
