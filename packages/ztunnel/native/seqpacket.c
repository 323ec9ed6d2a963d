/*
 * AF_UNIX SOCK_SEQPACKET with SCM_RIGHTS, driven by uv_poll on the Node event
 * loop (the ZDS transport between istio-cni and ztunnel). Descriptors are
 * non-blocking; readiness comes from uv_poll, so no call here ever blocks the
 * loop or occupies libuv's threadpool.
 *
 * Invariants:
 *   - a socket polls UV_READABLE|UV_DISCONNECT once started, plus UV_WRITABLE
 *     while packets are queued or a send error is waiting to be reported;
 *   - packets are sent in order: a packet is queued (with dup'ed fds, so the
 *     caller may close its own at once) whenever the queue is non-empty or
 *     sendmsg said EAGAIN; nothing is ever dropped while the socket is open;
 *   - teardown runs exactly once: stop + uv_close the poll handle, then close
 *     the fd, release queued packets' fds, and (only when the connection ended
 *     by itself) call onClose; a torn-down handle keeps nothing alive;
 *   - the C struct is freed only when both the uv handle is closed and the JS
 *     External wrapping it has been finalized (whichever comes last frees it);
 *   - received fds are close-on-exec (MSG_CMSG_CLOEXEC) and handed to JS,
 *     which owns them from then on; fds beyond the control buffer are closed
 *     by the kernel (and the packet is flagged truncated).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ztunnel-native.h"

#define ZTN_PACKET_BUFFER 1024 /* ztunnel reads ZDS packets into 1024 bytes */
#define ZTN_MAX_RECV_FDS 32
#define ZTN_MAX_SEND_FDS 253 /* SCM_MAX_FD */
#define ZTN_PACKETS_PER_WAKEUP 64

typedef struct out_packet {
  struct out_packet *next;
  size_t len;
  size_t nfds;
  int *fds; /* dup'ed, owned by the queue */
  unsigned char data[];
} out_packet;

typedef struct ztn_seq {
  ztn_instance *inst;
  napi_env env;
  int fd;
  uv_poll_t poll;
  int poll_init;   /* uv_poll_init succeeded: the handle must be uv_close'd */
  int poll_events; /* events currently requested (0 = stopped) */
  int started;
  int torn_down;
  int uv_closed;   /* no uv handle, or its close callback ran */
  int js_released; /* the External was finalized */
  int pending_err; /* a sendmsg failure to report as onClose(err) */
  const char *pending_syscall;
  out_packet *queue_head, *queue_tail;
  napi_ref on_packet, on_close;
  napi_async_context async_context;
  int has_async_context;
  struct ztn_seq *prev, *next; /* inst->sockets */
} ztn_seq;

typedef struct ztn_seq_server {
  ztn_instance *inst;
  napi_env env;
  int fd;
  uv_poll_t poll;
  int torn_down;
  int uv_closed;
  int js_released;
  dev_t file_dev;
  ino_t file_ino;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  napi_ref on_connection;
  napi_async_context async_context;
  struct ztn_seq_server *prev, *next; /* inst->servers */
} ztn_seq_server;

/* ------------------------------------------------------------------ lifetime */

static void seq_maybe_free(ztn_seq *s) {
  if (s->uv_closed && s->js_released) free(s);
}

static void seq_on_uv_closed(uv_handle_t *h) {
  ztn_seq *s = h->data;
  s->uv_closed = 1;
  seq_maybe_free(s);
}

static void free_queue(ztn_seq *s) {
  out_packet *p = s->queue_head;
  while (p != NULL) {
    out_packet *next = p->next;
    for (size_t i = 0; i < p->nfds; i++) close(p->fds[i]);
    free(p);
    p = next;
  }
  s->queue_head = s->queue_tail = NULL;
}

static void call_js(napi_env env, napi_async_context ctx, napi_ref fn_ref, size_t argc, const napi_value *argv) {
  napi_value fn, recv;
  if (fn_ref == NULL || napi_get_reference_value(env, fn_ref, &fn) != napi_ok || fn == NULL) return;
  if (napi_get_global(env, &recv) != napi_ok) return; /* napi_make_callback needs an object receiver */
  napi_value result;
  if (napi_make_callback(env, ctx, recv, fn, argc, argv, &result) != napi_ok) ztn_report_callback_exception(env);
}

/*
 * Ends the socket once. report: call onClose(errno, syscall) (the connection
 * ended by itself); with_js: the env may still run JavaScript and release refs.
 */
static void seq_teardown(ztn_seq *s, int report, int err, const char *syscall, int with_js) {
  if (s->torn_down) return;
  s->torn_down = 1;
  if (s->poll_init) {
    uv_poll_stop(&s->poll);
    uv_close((uv_handle_t *)&s->poll, seq_on_uv_closed);
  } else {
    s->uv_closed = 1;
  }
  if (s->fd >= 0) close(s->fd); /* after uv_close: libuv has forgotten this fd number */
  s->fd = -1;
  free_queue(s);
  if (s->prev != NULL) s->prev->next = s->next;
  else if (s->inst->sockets == s) s->inst->sockets = s->next;
  if (s->next != NULL) s->next->prev = s->prev;
  s->prev = s->next = NULL;

  napi_env env = s->env;
  if (with_js) {
    if (report && s->on_close != NULL) {
      napi_handle_scope scope;
      if (napi_open_handle_scope(env, &scope) == napi_ok) {
        napi_value argv[2];
        if (napi_create_int32(env, err, &argv[0]) == napi_ok &&
            napi_create_string_utf8(env, syscall != NULL ? syscall : "", NAPI_AUTO_LENGTH, &argv[1]) == napi_ok) {
          call_js(env, s->async_context, s->on_close, 2, argv);
        }
        napi_close_handle_scope(env, scope);
      }
    }
    if (s->on_packet != NULL) napi_delete_reference(env, s->on_packet);
    if (s->on_close != NULL) napi_delete_reference(env, s->on_close);
    if (s->has_async_context) napi_async_destroy(env, s->async_context);
  }
  s->on_packet = s->on_close = NULL;
  s->has_async_context = 0;
  /* Freed later by seq_on_uv_closed / seq_finalize, whichever runs last. */
}

static void seq_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  ztn_seq *s = data;
  /* A handle dropped by JavaScript without close(): release its descriptor. The
   * refs it holds keep JS alive while started, so this only happens before start
   * or after teardown; no JavaScript may run here. */
  if (!s->torn_down) seq_teardown(s, 0, 0, NULL, 0);
  s->js_released = 1;
  seq_maybe_free(s);
}

static ztn_seq *seq_new(napi_env env, ztn_instance *inst, int fd) {
  ztn_seq *s = calloc(1, sizeof(*s));
  if (s == NULL) return NULL;
  s->inst = inst;
  s->env = env;
  s->fd = fd;
  s->uv_closed = 1; /* until uv_poll_init */
  s->next = inst->sockets;
  if (inst->sockets != NULL) inst->sockets->prev = s;
  inst->sockets = s;
  return s;
}

/* Wraps s in an External; on failure tears s down (closing its fd) and returns NULL. */
static napi_value seq_wrap(napi_env env, ztn_seq *s) {
  napi_value external;
  if (napi_create_external(env, s, seq_finalize, NULL, &external) != napi_ok) {
    seq_teardown(s, 0, 0, NULL, 1);
    s->js_released = 1;
    seq_maybe_free(s);
    ztn_throw_napi_failure(env, "napi_create_external");
    return NULL;
  }
  return external;
}

static ztn_seq *seq_unwrap(napi_env env, napi_value v) {
  void *data = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &data) != napi_ok) {
    ztn_throw_type(env, "expected a SEQPACKET socket handle");
    return NULL;
  }
  return data;
}

/* ------------------------------------------------------------------ polling */

static void seq_on_poll(uv_poll_t *h, int status, int events);

static void seq_update_poll(ztn_seq *s) {
  if (s->torn_down || !s->poll_init) return;
  int events = 0;
  if (s->started) events |= UV_READABLE | UV_DISCONNECT;
  if (s->queue_head != NULL || s->pending_err != 0) events |= UV_WRITABLE;
  if (events == s->poll_events) return;
  int r = events == 0 ? uv_poll_stop(&s->poll) : uv_poll_start(&s->poll, events, seq_on_poll);
  if (r != 0) {
    /* Cannot wait for readiness any more: report it as the end of the connection. */
    s->pending_err = -r;
    s->pending_syscall = "uv_poll_start";
    seq_teardown(s, 1, -r, "uv_poll_start", 1);
    return;
  }
  s->poll_events = events;
}

/* Sends one packet; 0, or an errno (EAGAIN: try again when writable). */
static int seq_sendmsg(int fd, const void *data, size_t len, const int *fds, size_t nfds) {
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  struct msghdr msg;
  memset(&msg, 0, sizeof(msg));
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  char *control = NULL;
  if (nfds > 0) {
    size_t space = CMSG_SPACE(sizeof(int) * nfds);
    control = calloc(1, space);
    if (control == NULL) return ENOMEM;
    msg.msg_control = control;
    msg.msg_controllen = space;
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do {
    n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  int err = n < 0 ? errno : 0;
  free(control);
  if (err == EWOULDBLOCK) err = EAGAIN;
  return err;
}

/* Sends queued packets until the queue is empty or the socket is full. */
static void seq_flush(ztn_seq *s) {
  while (s->queue_head != NULL && s->pending_err == 0) {
    out_packet *p = s->queue_head;
    int err = seq_sendmsg(s->fd, p->data, p->len, p->fds, p->nfds);
    if (err == EAGAIN) return;
    if (err != 0) {
      s->pending_err = err;
      s->pending_syscall = "sendmsg";
      return;
    }
    s->queue_head = p->next;
    if (s->queue_head == NULL) s->queue_tail = NULL;
    for (size_t i = 0; i < p->nfds; i++) close(p->fds[i]);
    free(p);
  }
}

/* Receives and delivers up to ZTN_PACKETS_PER_WAKEUP packets; may tear down. */
static void seq_read(ztn_seq *s) {
  for (int round = 0; round < ZTN_PACKETS_PER_WAKEUP && !s->torn_down; round++) {
    unsigned char buf[ZTN_PACKET_BUFFER];
    union {
      struct cmsghdr align;
      char bytes[CMSG_SPACE(sizeof(int) * ZTN_MAX_RECV_FDS)];
    } control;
    struct iovec iov = {.iov_base = buf, .iov_len = sizeof(buf)};
    struct msghdr msg;
    memset(&msg, 0, sizeof(msg));
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.bytes;
    msg.msg_controllen = sizeof(control.bytes);
    ssize_t n = recvmsg(s->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      int err = errno;
      seq_teardown(s, 1, s->pending_err != 0 ? s->pending_err : err,
                   s->pending_err != 0 ? s->pending_syscall : "recvmsg", 1);
      return;
    }
    int fds[ZTN_MAX_RECV_FDS];
    size_t nfds = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      const unsigned char *p = CMSG_DATA(c);
      for (size_t i = 0; i < count; i++) {
        int fd;
        memcpy(&fd, p + i * sizeof(int), sizeof(int));
        if (nfds < ZTN_MAX_RECV_FDS) fds[nfds++] = fd;
        else close(fd);
      }
    }
    int truncated = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
    if (n == 0 && nfds == 0 && !truncated) {
      /* End of stream: the peer closed (a zero-length read is EOF, as in Go's unixpacket). */
      seq_teardown(s, 1, s->pending_err, s->pending_err != 0 ? s->pending_syscall : "recvmsg", 1);
      return;
    }
    size_t len = (size_t)n > sizeof(buf) ? sizeof(buf) : (size_t)n;
    napi_env env = s->env;
    napi_handle_scope scope;
    napi_value argv[3];
    int ok = napi_open_handle_scope(env, &scope) == napi_ok;
    if (ok) {
      void *copy;
      ok = napi_create_buffer_copy(env, len, buf, &copy, &argv[0]) == napi_ok &&
           napi_create_array_with_length(env, nfds, &argv[1]) == napi_ok &&
           napi_get_boolean(env, truncated, &argv[2]) == napi_ok;
      for (size_t i = 0; ok && i < nfds; i++) {
        napi_value v;
        ok = napi_create_int32(env, fds[i], &v) == napi_ok && napi_set_element(env, argv[1], (uint32_t)i, v) == napi_ok;
      }
      if (ok) call_js(env, s->async_context, s->on_packet, 3, argv);
      napi_close_handle_scope(env, scope);
    }
    if (!ok) {
      for (size_t i = 0; i < nfds; i++) close(fds[i]);
      seq_teardown(s, 1, ENOMEM, "recvmsg", 1);
      return;
    }
  }
}

static void seq_on_poll(uv_poll_t *h, int status, int events) {
  ztn_seq *s = h->data;
  if (s->torn_down) return;
  if (status < 0) {
    seq_teardown(s, 1, -status, "poll", 1);
    return;
  }
  if (events & UV_WRITABLE) seq_flush(s);
  /* Deliver what the peer sent before reporting any error or end. */
  if (events & (UV_READABLE | UV_DISCONNECT)) seq_read(s);
  if (s->torn_down) return;
  if (s->pending_err != 0) {
    /* A dead socket becomes readable (EOF) or hangs up; if it was not readable yet,
     * report the send failure now. */
    seq_teardown(s, 1, s->pending_err, s->pending_syscall, 1);
    return;
  }
  seq_update_poll(s);
}

/* ------------------------------------------------------------------ JS API */

/* seqpacketConnect(path) -> handle (not yet polling) */
napi_value ztn_seqpacket_connect(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || ztn_arg_string(env, argv[0], "path", addr.sun_path, sizeof(addr.sun_path)) != 0) return NULL;

  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ztn_throw_errno(env, "socket", errno, "creating an AF_UNIX SOCK_SEQPACKET socket");
    return NULL;
  }
  /* AF_UNIX connect completes at once; a full backlog gives EAGAIN (never EINPROGRESS). */
  int r;
  do {
    r = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
  } while (r != 0 && errno == EINTR);
  if (r != 0) {
    int err = errno;
    close(fd);
    char context[sizeof(addr.sun_path) + 32];
    snprintf(context, sizeof(context), "connecting to %s", addr.sun_path);
    ztn_throw_errno(env, "connect", err, context);
    return NULL;
  }
  ztn_seq *s = seq_new(env, ztn_get_instance(env), fd);
  if (s == NULL) {
    close(fd);
    ztn_throw_errno(env, "calloc", ENOMEM, "allocating a SEQPACKET socket");
    return NULL;
  }
  return seq_wrap(env, s);
}

/* seqpacketStart(handle, onPacket(data, fds, truncated), onClose(errno, syscall)) */
napi_value ztn_seqpacket_start(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    ztn_throw_type(env, "seqpacketStart(handle, onPacket, onClose)");
    return NULL;
  }
  ztn_seq *s = seq_unwrap(env, argv[0]);
  if (s == NULL) return NULL;
  if (s->torn_down || s->started) {
    ztn_throw_errno(env, "uv_poll_start", EINVAL, "the SEQPACKET socket is closed or already started");
    return NULL;
  }
  napi_value name;
  ZTN_CHECK(env, napi_create_string_utf8(env, "ZtunnelSeqpacket", NAPI_AUTO_LENGTH, &name));
  ZTN_CHECK(env, napi_async_init(env, NULL, name, &s->async_context));
  s->has_async_context = 1;
  ZTN_CHECK(env, napi_create_reference(env, argv[1], 1, &s->on_packet));
  ZTN_CHECK(env, napi_create_reference(env, argv[2], 1, &s->on_close));
  int r = uv_poll_init(s->inst->loop, &s->poll, s->fd);
  if (r != 0) {
    ztn_throw_errno(env, "uv_poll_init", -r, "watching the SEQPACKET socket");
    return NULL;
  }
  s->poll.data = s;
  s->poll_init = 1;
  s->uv_closed = 0;
  s->started = 1;
  seq_update_poll(s);
  return NULL;
}

/* seqpacketSend(handle, data, fds) */
napi_value ztn_seqpacket_send(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 3) {
    ztn_throw_type(env, "seqpacketSend(handle, data, fds)");
    return NULL;
  }
  ztn_seq *s = seq_unwrap(env, argv[0]);
  if (s == NULL) return NULL;
  void *data = NULL;
  size_t len = 0;
  bool is_typed = false;
  ZTN_CHECK(env, napi_is_typedarray(env, argv[1], &is_typed));
  if (!is_typed) {
    ztn_throw_type(env, "data must be a Uint8Array");
    return NULL;
  }
  napi_typedarray_type ttype;
  napi_value arraybuffer;
  size_t offset;
  ZTN_CHECK(env, napi_get_typedarray_info(env, argv[1], &ttype, &len, &data, &arraybuffer, &offset));
  if (ttype != napi_uint8_array) {
    ztn_throw_type(env, "data must be a Uint8Array");
    return NULL;
  }
  int fds[ZTN_MAX_SEND_FDS];
  size_t nfds = 0;
  if (ztn_arg_fds(env, argv[2], "fds", fds, ZTN_MAX_SEND_FDS, &nfds) != 0) return NULL;
  if (s->torn_down) {
    ztn_throw_errno(env, "sendmsg", EPIPE, "sending on a closed SEQPACKET socket");
    return NULL;
  }
  if (s->pending_err != 0) {
    ztn_throw_errno(env, s->pending_syscall, s->pending_err, "the SEQPACKET connection has failed");
    return NULL;
  }
  if (s->queue_head == NULL) {
    int err = seq_sendmsg(s->fd, data, len, fds, nfds);
    if (err == 0) return NULL;
    if (err == EMSGSIZE || err == EBADF || err == EINVAL || err == ETOOMANYREFS || err == ENOMEM) {
      /* The packet itself is unacceptable; the connection is unaffected. */
      ztn_throw_errno(env, "sendmsg", err, "sending a SEQPACKET packet");
      return NULL;
    }
    if (err != EAGAIN) {
      /* The connection failed: report it through onClose, from the event loop. */
      s->pending_err = err;
      s->pending_syscall = "sendmsg";
      seq_update_poll(s);
      return NULL;
    }
  }
  /* Queue a copy (with our own duplicates of the fds) and wait for writability. */
  out_packet *p = malloc(sizeof(*p) + len);
  int *dups = nfds > 0 ? malloc(sizeof(int) * nfds) : NULL;
  if (p == NULL || (nfds > 0 && dups == NULL)) {
    free(p);
    free(dups);
    ztn_throw_errno(env, "malloc", ENOMEM, "queueing a SEQPACKET packet");
    return NULL;
  }
  for (size_t i = 0; i < nfds; i++) {
    dups[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 0);
    if (dups[i] < 0) {
      int err = errno;
      for (size_t j = 0; j < i; j++) close(dups[j]);
      free(dups);
      free(p);
      ztn_throw_errno(env, "fcntl", err, "duplicating a descriptor to queue it");
      return NULL;
    }
  }
  p->next = NULL;
  p->len = len;
  p->nfds = nfds;
  p->fds = dups;
  if (len > 0) memcpy(p->data, data, len);
  if (s->queue_tail != NULL) s->queue_tail->next = p;
  else s->queue_head = p;
  s->queue_tail = p;
  seq_update_poll(s);
  return NULL;
}

/* seqpacketClose(handle): idempotent, never calls back. */
napi_value ztn_seqpacket_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1) return NULL;
  ztn_seq *s = seq_unwrap(env, argv[0]);
  if (s == NULL) return NULL;
  seq_teardown(s, 0, 0, NULL, 1);
  return NULL;
}

/* ------------------------------------------------------------------ server */

static void server_maybe_free(ztn_seq_server *srv) {
  if (srv->uv_closed && srv->js_released) free(srv);
}

static void server_on_uv_closed(uv_handle_t *h) {
  ztn_seq_server *srv = h->data;
  srv->uv_closed = 1;
  server_maybe_free(srv);
}

static void server_teardown(ztn_seq_server *srv, int with_js) {
  if (srv->torn_down) return;
  srv->torn_down = 1;
  uv_poll_stop(&srv->poll);
  uv_close((uv_handle_t *)&srv->poll, server_on_uv_closed);
  close(srv->fd);
  srv->fd = -1;
  /* Remove the socket file, but only if it is still the one this server created. */
  struct stat st;
  if (lstat(srv->path, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == srv->file_dev &&
      st.st_ino == srv->file_ino) {
    unlink(srv->path);
  }
  if (srv->prev != NULL) srv->prev->next = srv->next;
  else if (srv->inst->servers == srv) srv->inst->servers = srv->next;
  if (srv->next != NULL) srv->next->prev = srv->prev;
  srv->prev = srv->next = NULL;
  if (with_js) {
    napi_delete_reference(srv->env, srv->on_connection);
    napi_async_destroy(srv->env, srv->async_context);
  }
  srv->on_connection = NULL;
}

static void server_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  ztn_seq_server *srv = data;
  if (!srv->torn_down) server_teardown(srv, 0);
  srv->js_released = 1;
  server_maybe_free(srv);
}

static void server_on_poll(uv_poll_t *h, int status, int events) {
  (void)events;
  ztn_seq_server *srv = h->data;
  if (srv->torn_down || status < 0) return;
  napi_env env = srv->env;
  for (int round = 0; round < ZTN_PACKETS_PER_WAKEUP && !srv->torn_down; round++) {
    int fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      /* EAGAIN: done. Anything else (EMFILE...): try again on the next wakeup. */
      return;
    }
    ztn_seq *s = seq_new(env, srv->inst, fd);
    if (s == NULL) {
      close(fd);
      return;
    }
    napi_handle_scope scope;
    if (napi_open_handle_scope(env, &scope) != napi_ok) {
      seq_teardown(s, 0, 0, NULL, 1);
      s->js_released = 1;
      seq_maybe_free(s);
      return;
    }
    napi_value external;
    if (napi_create_external(env, s, seq_finalize, NULL, &external) != napi_ok) {
      seq_teardown(s, 0, 0, NULL, 1);
      s->js_released = 1;
      seq_maybe_free(s);
    } else {
      call_js(env, srv->async_context, srv->on_connection, 1, &external);
    }
    napi_close_handle_scope(env, scope);
  }
}

/* seqpacketListen(path, onConnection(handle)) -> server handle */
napi_value ztn_seqpacket_listen(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 2 || ztn_arg_string(env, argv[0], "path", addr.sun_path, sizeof(addr.sun_path)) != 0) return NULL;
  char context[sizeof(addr.sun_path) + 48];

  /* A socket file left by a previous run is replaced; any other file is never touched. */
  struct stat st;
  if (lstat(addr.sun_path, &st) == 0 && S_ISSOCK(st.st_mode)) unlink(addr.sun_path);

  int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    ztn_throw_errno(env, "socket", errno, "creating an AF_UNIX SOCK_SEQPACKET socket");
    return NULL;
  }
  if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    snprintf(context, sizeof(context), "binding %s", addr.sun_path);
    ztn_throw_errno(env, "bind", err, context);
    return NULL;
  }
  if (lstat(addr.sun_path, &st) != 0 || listen(fd, 128) != 0) {
    int err = errno;
    close(fd);
    unlink(addr.sun_path);
    snprintf(context, sizeof(context), "listening on %s", addr.sun_path);
    ztn_throw_errno(env, "listen", err, context);
    return NULL;
  }
  ztn_instance *inst = ztn_get_instance(env);
  ztn_seq_server *srv = calloc(1, sizeof(*srv));
  if (srv == NULL) {
    close(fd);
    unlink(addr.sun_path);
    ztn_throw_errno(env, "calloc", ENOMEM, "allocating a SEQPACKET server");
    return NULL;
  }
  srv->inst = inst;
  srv->env = env;
  srv->fd = fd;
  srv->file_dev = st.st_dev;
  srv->file_ino = st.st_ino;
  memcpy(srv->path, addr.sun_path, sizeof(srv->path));
  int r = uv_poll_init(inst->loop, &srv->poll, fd);
  if (r != 0) {
    close(fd);
    unlink(addr.sun_path);
    free(srv);
    ztn_throw_errno(env, "uv_poll_init", -r, "watching the SEQPACKET server");
    return NULL;
  }
  srv->poll.data = srv;
  srv->next = inst->servers;
  if (inst->servers != NULL) inst->servers->prev = srv;
  inst->servers = srv;

  napi_value name, external;
  if (napi_create_string_utf8(env, "ZtunnelSeqpacketServer", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, NULL, name, &srv->async_context) != napi_ok ||
      napi_create_reference(env, argv[1], 1, &srv->on_connection) != napi_ok ||
      napi_create_external(env, srv, server_finalize, NULL, &external) != napi_ok) {
    server_teardown(srv, 0);
    srv->js_released = 1; /* freed by the uv close callback */
    ztn_throw_napi_failure(env, "creating the SEQPACKET server handle");
    return NULL;
  }
  r = uv_poll_start(&srv->poll, UV_READABLE, server_on_poll);
  if (r != 0) {
    server_teardown(srv, 1);
    ztn_throw_errno(env, "uv_poll_start", -r, "watching the SEQPACKET server");
    return NULL;
  }
  return external;
}

/* seqpacketServerClose(handle): idempotent. */
napi_value ztn_seqpacket_server_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  void *data = NULL;
  napi_valuetype t;
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_typeof(env, argv[0], &t) != napi_ok || t != napi_external ||
      napi_get_value_external(env, argv[0], &data) != napi_ok) {
    ztn_throw_type(env, "expected a SEQPACKET server handle");
    return NULL;
  }
  server_teardown((ztn_seq_server *)data, 1);
  return NULL;
}

/* At env teardown: stop polling and close every descriptor still open; no JavaScript runs. */
void ztn_seqpacket_teardown_all(ztn_instance *inst) {
  while (inst->sockets != NULL) seq_teardown(inst->sockets, 0, 0, NULL, 0);
  while (inst->servers != NULL) server_teardown(inst->servers, 0);
}
