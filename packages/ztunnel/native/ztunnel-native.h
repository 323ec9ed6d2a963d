/*
 * Shared declarations of the ztunnel native addon (Linux only): the per-env
 * instance state, error helpers (errors.c), argument helpers (args.c), network
 * namespace switching (netns.c), TCP/UDP socket creation (sockets.c) and
 * AF_UNIX SOCK_SEQPACKET with SCM_RIGHTS on uv_poll (seqpacket.c).
 */
#ifndef ZTUNNEL_NATIVE_H
#define ZTUNNEL_NATIVE_H

#define NAPI_VERSION 8
#include <node_api.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct ztn_seq;
struct ztn_seq_server;

/* One per Node environment (main thread or worker). */
typedef struct ztn_instance {
  /* The netns this thread was in when the addon loaded: where every setns returns to. */
  int self_netns;
  /* Whether the kernel answers ioctl(NS_GET_NSTYPE) (Linux >= 4.11). */
  int has_ns_get_nstype;
  uv_loop_t *loop;
  /* Open SEQPACKET handles, closed at env teardown. */
  struct ztn_seq *sockets;
  struct ztn_seq_server *servers;
} ztn_instance;

ztn_instance *ztn_get_instance(napi_env env);

/* errors.c: every failure thrown to JS carries syscall and errno (or a code such as ENOTNETNS). */
void ztn_throw_errno(napi_env env, const char *syscall, int err, const char *context);
void ztn_throw_code(napi_env env, const char *code, const char *syscall, const char *message);
void ztn_throw_type(napi_env env, const char *message);
/* Evaluates a napi call; on failure throws (if nothing is pending yet) and returns NULL from the caller. */
#define ZTN_CHECK(env, call)                                                 \
  do {                                                                       \
    if ((call) != napi_ok) {                                                 \
      ztn_throw_napi_failure((env), #call);                                  \
      return NULL;                                                           \
    }                                                                        \
  } while (0)
void ztn_throw_napi_failure(napi_env env, const char *what);
/* A new descriptor as a JS number; on failure the descriptor is closed and an exception is pending (NULL). */
napi_value ztn_fd_value(napi_env env, int fd);
/* Rethrows a JS exception raised by a callback that native code invoked from the event loop. */
void ztn_report_callback_exception(napi_env env);

/* args.c: argument access; each returns 0 on success, or throws a TypeError and returns -1. */
int ztn_arg_int32(napi_env env, napi_value v, const char *name, int32_t *out);
int ztn_arg_int64(napi_env env, napi_value v, const char *name, int64_t *out);
int ztn_arg_bool(napi_env env, napi_value v, const char *name, int *out);
int ztn_arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t size);
/* A string or null (null gives an empty string and *present = 0). */
int ztn_arg_opt_string(napi_env env, napi_value v, const char *name, char *buf, size_t size, int *present);
int ztn_arg_fds(napi_env env, napi_value v, const char *name, int *fds, size_t max, size_t *count);

/* netns.c */
int ztn_netns_init(ztn_instance *inst); /* returns 0 or an errno */
/* setns(netns) when netns >= 0; returns 0 or an errno (nothing changed then). */
int ztn_netns_enter(ztn_instance *inst, int netns);
/* setns back to self_netns when netns >= 0; aborts the process if that fails. */
void ztn_netns_leave(ztn_instance *inst, int netns);
napi_value ztn_open_netns(napi_env env, napi_callback_info info);
napi_value ztn_netns_id(napi_env env, napi_callback_info info);
napi_value ztn_close_fd(napi_env env, napi_callback_info info);

/* sockets.c */
napi_value ztn_tcp_listener(napi_env env, napi_callback_info info);
napi_value ztn_tcp_socket(napi_env env, napi_callback_info info);
napi_value ztn_udp_socket(napi_env env, napi_callback_info info);
napi_value ztn_original_destination(napi_env env, napi_callback_info info);
napi_value ztn_socket_mark(napi_env env, napi_callback_info info);
napi_value ztn_malloc_trim(napi_env env, napi_callback_info info);

/* seqpacket.c */
napi_value ztn_seqpacket_connect(napi_env env, napi_callback_info info);
napi_value ztn_seqpacket_start(napi_env env, napi_callback_info info);
napi_value ztn_seqpacket_send(napi_env env, napi_callback_info info);
napi_value ztn_seqpacket_close(napi_env env, napi_callback_info info);
napi_value ztn_seqpacket_listen(napi_env env, napi_callback_info info);
napi_value ztn_seqpacket_server_close(napi_env env, napi_callback_info info);
void ztn_seqpacket_teardown_all(ztn_instance *inst);

#endif
