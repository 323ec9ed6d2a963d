/**
 * The Gateway API mesh (GAMMA) conformance suite against our waypoint, set up
 * as Istio's ambient conformance run sets up its Envoy waypoint: a waypoint
 * `namespace` in gateway-conformance-mesh (`--for all`, the namespace
 * labelled istio.io/use-waypoint=namespace), every pod behind its own
 * ztunnel, clients sending through their pod's ztunnel, the waypoint reading
 * its routes from a directory of the tests' manifests. One describe per
 * upstream test (ShortName), in upstream run order; see conformance-suite.ts.
 */
import { defineMeshConformance } from './conformance-suite.js';
import { startWaypointUnderTest } from '../support/waypoint-harness.js';

defineMeshConformance({
  podNet: '127.0.90',
  vipNet: '127.90.0',
  startWaypoint: (mesh, waypoint) =>
    startWaypointUnderTest(mesh.cp, {
      ip: waypoint.ip,
      namespace: waypoint.namespace,
      name: waypoint.name,
      serviceAccount: waypoint.serviceAccount,
      configDir: mesh.configDir,
      // The pod name the mesh gave the waypoint's Workload.
      env: { POD_NAME: waypoint.podName },
    }),
});
