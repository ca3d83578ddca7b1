// sbx's version: package.json's, put into the bundles by scripts/build.mjs ('0.0.0-dev' when the
// sources run directly, as in tests).
declare const SBX_VERSION: string;
export const VERSION = typeof SBX_VERSION === 'string' ? SBX_VERSION : '0.0.0-dev';
