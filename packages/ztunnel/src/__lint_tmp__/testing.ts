export * from '@ambient/control/testing';
