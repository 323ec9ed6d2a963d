/**
 * `@ambient/waypoint/testing`: helpers for tests of other packages and the e2e
 * suite (echo backends that answer as the Gateway API conformance echo app does,
 * a waypoint under test). Never imported by production code (lint-enforced).
 */
export {};
