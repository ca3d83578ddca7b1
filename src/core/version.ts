// sbx's version: put in by the build (scripts/build.mjs); running from source it is 0.0.0-dev.
declare const SBX_VERSION: string;
export const VERSION = typeof SBX_VERSION === 'string' ? SBX_VERSION : '0.0.0-dev';
