// Sandbox names and ids: validation and generation (pure).
import { UsageError } from './errors.ts';

/** A uniform random integer below `n` (n <= 256), from Web Crypto (global: no import cost). */
function randomInt(n: number): number {
  const limit = 256 - (256 % n);
  const byte = new Uint8Array(1);
  do crypto.getRandomValues(byte);
  while (byte[0]! >= limit);
  return byte[0]! % n;
}

export const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;
const ID_ALPHABET = 'abcdefghijklmnopqrstuvwxyz0123456789';
export const ID_LENGTH = 10;

export function validateName(name: string): string {
  if (!NAME_PATTERN.test(name)) {
    throw new UsageError(
      `invalid sandbox name "${name}": use 1-63 characters of a-z, 0-9 and "-", starting with a letter or digit`,
    );
  }
  return name;
}

/** A short random id: 10 characters of [a-z0-9], about 51 bits. */
export function newId(): string {
  let id = '';
  for (let i = 0; i < ID_LENGTH; i++) id += ID_ALPHABET[randomInt(ID_ALPHABET.length)];
  return id;
}

const ADJECTIVES = [
  'amber', 'brave', 'calm', 'clever', 'crisp', 'dusty', 'eager', 'fancy', 'gentle', 'happy',
  'icy', 'jolly', 'keen', 'lucky', 'merry', 'noble', 'odd', 'proud', 'quiet', 'rapid',
  'shy', 'sunny', 'tidy', 'vivid', 'warm', 'witty', 'young', 'zesty', 'bold', 'cosy',
];
const NOUNS = [
  'otter', 'falcon', 'badger', 'heron', 'lynx', 'panda', 'raven', 'tiger', 'walrus', 'yak',
  'beaver', 'cobra', 'dingo', 'eagle', 'ferret', 'gecko', 'ibis', 'koala', 'lemur', 'moose',
  'newt', 'owl', 'puffin', 'quail', 'robin', 'seal', 'toad', 'viper', 'wombat', 'zebra',
];

/** A readable name like "brave-otter-k3f9"; the suffix keeps collisions rare. */
export function generateName(): string {
  const pick = (list: string[]) => list[randomInt(list.length)]!;
  return `${pick(ADJECTIVES)}-${pick(NOUNS)}-${newId().slice(0, 4)}`;
}
