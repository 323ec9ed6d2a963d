/** Build information for `ztunnel version`, config_dump and logs. */
export const VERSION = {
  name: 'ambient-ts ztunnel',
  version: '0.1.0',
  runtime: `node ${process.version}`,
  platform: `${process.platform}/${process.arch}`,
} as const;
