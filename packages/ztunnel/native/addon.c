/*
 * Module registration: creates the per-env instance (opening this thread's own
 * network namespace once, for switching back after every setns) and exports the
 * raw functions that src/platform/native.ts wraps.
 */
#include <stdlib.h>
#include <unistd.h>

#include "ztunnel-native.h"

ztn_instance *ztn_get_instance(napi_env env) {
  void *data = NULL;
  if (napi_get_instance_data(env, &data) != napi_ok) return NULL;
  return (ztn_instance *)data;
}

static void instance_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  ztn_instance *inst = (ztn_instance *)data;
  ztn_seqpacket_teardown_all(inst);
  if (inst->self_netns >= 0) close(inst->self_netns);
  inst->self_netns = -1;
  /* The instance itself is left allocated: uv close callbacks of handles torn
   * down above may still run and must not see freed memory. */
}

static napi_value init(napi_env env, napi_value exports) {
  ztn_instance *inst = calloc(1, sizeof(*inst));
  if (inst == NULL) {
    ztn_throw_errno(env, "calloc", 12 /* ENOMEM */, "allocating the addon state");
    return NULL;
  }
  inst->self_netns = -1;
  int err = ztn_netns_init(inst);
  if (err != 0) {
    free(inst);
    ztn_throw_errno(env, "open", err, "opening /proc/thread-self/ns/net (this thread's network namespace)");
    return NULL;
  }
  if (napi_get_uv_event_loop(env, &inst->loop) != napi_ok ||
      napi_set_instance_data(env, inst, instance_finalize, NULL) != napi_ok) {
    close(inst->self_netns);
    free(inst);
    ztn_throw_napi_failure(env, "initialising the addon instance");
    return NULL;
  }

  const napi_property_descriptor fns[] = {
      {"openNetns", NULL, ztn_open_netns, NULL, NULL, NULL, napi_enumerable, NULL},
      {"netnsId", NULL, ztn_netns_id, NULL, NULL, NULL, napi_enumerable, NULL},
      {"closeFd", NULL, ztn_close_fd, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tcpListener", NULL, ztn_tcp_listener, NULL, NULL, NULL, napi_enumerable, NULL},
      {"tcpSocket", NULL, ztn_tcp_socket, NULL, NULL, NULL, napi_enumerable, NULL},
      {"udpSocket", NULL, ztn_udp_socket, NULL, NULL, NULL, napi_enumerable, NULL},
      {"originalDestination", NULL, ztn_original_destination, NULL, NULL, NULL, napi_enumerable, NULL},
      {"socketMark", NULL, ztn_socket_mark, NULL, NULL, NULL, napi_enumerable, NULL},
      {"mallocTrim", NULL, ztn_malloc_trim, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seqpacketConnect", NULL, ztn_seqpacket_connect, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seqpacketStart", NULL, ztn_seqpacket_start, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seqpacketSend", NULL, ztn_seqpacket_send, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seqpacketClose", NULL, ztn_seqpacket_close, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seqpacketListen", NULL, ztn_seqpacket_listen, NULL, NULL, NULL, napi_enumerable, NULL},
      {"seqpacketServerClose", NULL, ztn_seqpacket_server_close, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  ZTN_CHECK(env, napi_define_properties(env, exports, sizeof(fns) / sizeof(fns[0]), fns));
  return exports;
}

NAPI_MODULE_INIT() { return init(env, exports); }
