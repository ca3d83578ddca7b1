// Labels tie every Docker object to sbx and to one SBX_HOME, so sbx only ever touches its own.
export const LABEL_MANAGED = 'sbx.managed';
export const LABEL_ID = 'sbx.id';
export const LABEL_NAME = 'sbx.name';
export const LABEL_HOME = 'sbx.home';

/** On the objects of a pooled sandbox (made before its claim: sbx.name holds its id). */
export const LABEL_POOLED = 'sbx.pooled';

export function sandboxLabels(id: string, name: string, home: string, pooled = false): Record<string, string> {
  return { [LABEL_MANAGED]: 'true', [LABEL_ID]: id, [LABEL_NAME]: name, [LABEL_HOME]: home, ...(pooled ? { [LABEL_POOLED]: 'true' } : {}) };
}
