import { describe, expect, it } from 'vitest';
import { resourceIdText } from './types.js';

describe('resourceIdText', () => {
  it('names a resource as kind namespace/name, the form every log line and problem uses', () => {
    expect(resourceIdText({ kind: 'HTTPRoute', namespace: 'demo', name: 'split' })).toBe('HTTPRoute demo/split');
  });
});
