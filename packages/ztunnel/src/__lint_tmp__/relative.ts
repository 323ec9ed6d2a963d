export { systemClock } from '../../../control/src/index.js';
