export { systemClock } from '@ambient/control/src/index.js';
