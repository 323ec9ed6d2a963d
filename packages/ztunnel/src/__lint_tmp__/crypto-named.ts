import { randomBytes } from 'node:crypto';
export const b = randomBytes(8);
