/** The waypoint's version (istio_build tag defaults to ISTIO_META_ISTIO_VERSION; this is ours, for /config_dump). */
export const VERSION = '0.1.0';
