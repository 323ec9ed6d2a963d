/*
 * TCP and UDP socket creation, optionally inside another network namespace,
 * with the options Node cannot set (SO_MARK, SO_REUSEPORT, IP(V6)_TRANSPARENT,
 * IP(V6)_FREEBIND), and reading SO_ORIGINAL_DST. Sockets are non-blocking and
 * close-on-exec; ownership passes to the caller only on success, every error
 * path closes what it created and returns the thread to its own namespace.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ztunnel-native.h"

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h */
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv6/ip6_tables.h */
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef IPV6_FREEBIND
#define IPV6_FREEBIND 78
#endif
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

typedef struct {
  struct sockaddr_storage ss;
  socklen_t len;
  int family;
  int any6; /* the IPv6 wildcard '::' (made dual-stack) */
} ztn_addr;

/* Parses a numeric IPv4/IPv6 address; returns 0 or EINVAL. */
static int parse_addr(const char *ip, int port, ztn_addr *out) {
  memset(out, 0, sizeof(*out));
  struct sockaddr_in *in4 = (struct sockaddr_in *)&out->ss;
  struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&out->ss;
  if (inet_pton(AF_INET, ip, &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons((uint16_t)port);
    out->len = sizeof(*in4);
    out->family = AF_INET;
    return 0;
  }
  memset(out, 0, sizeof(*out));
  if (inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons((uint16_t)port);
    out->len = sizeof(*in6);
    out->family = AF_INET6;
    out->any6 = IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr);
    return 0;
  }
  return EINVAL;
}

/* The failing step of a socket setup, for the error thrown after cleanup. */
typedef struct {
  int err;
  const char *syscall;
  char context[160];
} ztn_failure;

static int fail(ztn_failure *f, int err, const char *syscall, const char *context) {
  f->err = err;
  f->syscall = syscall;
  snprintf(f->context, sizeof(f->context), "%s", context);
  return -1;
}

static int set_int(int fd, int level, int opt, int value, ztn_failure *f, const char *what) {
  if (setsockopt(fd, level, opt, &value, sizeof(value)) != 0) return fail(f, errno, "setsockopt", what);
  return 0;
}

static int set_common(int fd, int family, int64_t mark, int reuse_port, int transparent, int freebind, ztn_failure *f) {
  if (reuse_port && set_int(fd, SOL_SOCKET, SO_REUSEPORT, 1, f, "setting SO_REUSEPORT") != 0) return -1;
  if (mark >= 0 && set_int(fd, SOL_SOCKET, SO_MARK, (int)(uint32_t)mark, f, "setting SO_MARK") != 0) return -1;
  if (transparent) {
    if (family == AF_INET6) {
      if (set_int(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, 1, f, "setting IPV6_TRANSPARENT") != 0) return -1;
    } else if (set_int(fd, IPPROTO_IP, IP_TRANSPARENT, 1, f, "setting IP_TRANSPARENT") != 0) {
      return -1;
    }
  }
  if (freebind) {
    if (family == AF_INET6) {
      if (set_int(fd, IPPROTO_IPV6, IPV6_FREEBIND, 1, f, "setting IPV6_FREEBIND") != 0) return -1;
    } else if (set_int(fd, IPPROTO_IP, IP_FREEBIND, 1, f, "setting IP_FREEBIND") != 0) {
      return -1;
    }
  }
  return 0;
}

static void describe(char *buf, size_t size, const char *what, const char *ip, int port) {
  if (strchr(ip, ':') != NULL) snprintf(buf, size, "%s [%s]:%d", what, ip, port);
  else snprintf(buf, size, "%s %s:%d", what, ip, port);
}

/*
 * Runs setup(fd) for a new socket of (family, type), inside netns when >= 0.
 * Returns the fd, or -1 with *f filled (the socket closed, the thread back home).
 */
typedef int (*ztn_setup)(int fd, void *arg, ztn_failure *f);

static int create_in_netns(ztn_instance *inst, int netns, int family, int type, ztn_setup setup, void *arg,
                           ztn_failure *f) {
  int err = ztn_netns_enter(inst, netns);
  if (err != 0) {
    fail(f, err, "setns", "entering the network namespace");
    return -1;
  }
  int fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fail(f, errno, "socket", "creating the socket");
  } else if (setup(fd, arg, f) != 0) {
    close(fd);
    fd = -1;
  }
  ztn_netns_leave(inst, netns);
  return fd;
}

static napi_value fd_result(napi_env env, int fd, ztn_failure *f) {
  if (fd < 0) {
    ztn_throw_errno(env, f->syscall, f->err, f->context);
    return NULL;
  }
  return ztn_fd_value(env, fd);
}

/* ---- tcpListener(netns, host, port, backlog, mark, reusePort, transparent) ---- */

typedef struct {
  ztn_addr addr;
  char host[64];
  int port, backlog, reuse_port, transparent;
  int64_t mark;
} listener_args;

static int setup_listener(int fd, void *p, ztn_failure *f) {
  listener_args *a = p;
  char what[128];
  if (set_int(fd, SOL_SOCKET, SO_REUSEADDR, 1, f, "setting SO_REUSEADDR") != 0) return -1;
  if (set_common(fd, a->addr.family, a->mark, a->reuse_port, a->transparent, 0, f) != 0) return -1;
  if (a->addr.any6 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0, f, "clearing IPV6_V6ONLY (dual-stack)") != 0) return -1;
  if (bind(fd, (struct sockaddr *)&a->addr.ss, a->addr.len) != 0) {
    describe(what, sizeof(what), "binding", a->host, a->port);
    return fail(f, errno, "bind", what);
  }
  if (listen(fd, a->backlog) != 0) {
    describe(what, sizeof(what), "listening on", a->host, a->port);
    return fail(f, errno, "listen", what);
  }
  return 0;
}

napi_value ztn_tcp_listener(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  int32_t netns, port, backlog;
  listener_args a;
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 7 || ztn_arg_int32(env, argv[0], "netns", &netns) != 0 ||
      ztn_arg_string(env, argv[1], "host", a.host, sizeof(a.host)) != 0 ||
      ztn_arg_int32(env, argv[2], "port", &port) != 0 || ztn_arg_int32(env, argv[3], "backlog", &backlog) != 0 ||
      ztn_arg_int64(env, argv[4], "mark", &a.mark) != 0 || ztn_arg_bool(env, argv[5], "reusePort", &a.reuse_port) != 0 ||
      ztn_arg_bool(env, argv[6], "transparent", &a.transparent) != 0) {
    return NULL;
  }
  a.port = port;
  a.backlog = backlog;
  ztn_failure f;
  if (parse_addr(a.host, port, &a.addr) != 0) {
    fail(&f, EINVAL, "inet_pton", "host must be a numeric IPv4 or IPv6 address");
    return fd_result(env, -1, &f);
  }
  int fd = create_in_netns(ztn_get_instance(env), netns, a.addr.family, SOCK_STREAM, setup_listener, &a, &f);
  return fd_result(env, fd, &f);
}

/* ---- tcpSocket(netns, family, mark, transparent, freebind, bindIp|null, bindPort) ---- */

typedef struct {
  int family, transparent, freebind, has_bind;
  int64_t mark;
  ztn_addr bind_addr;
  char bind_ip[64];
  int bind_port;
} socket_args;

static int setup_socket(int fd, void *p, ztn_failure *f) {
  socket_args *a = p;
  if (set_common(fd, a->family, a->mark, 0, a->transparent, a->freebind, f) != 0) return -1;
  if (a->has_bind) {
    /* Port 0: let connect() pick the port, so many sockets can share one source address. */
    if (a->bind_port == 0 &&
        set_int(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1, f, "setting IP_BIND_ADDRESS_NO_PORT") != 0) {
      return -1;
    }
    if (bind(fd, (struct sockaddr *)&a->bind_addr.ss, a->bind_addr.len) != 0) {
      char what[128];
      describe(what, sizeof(what), "binding the local address", a->bind_ip, a->bind_port);
      return fail(f, errno, "bind", what);
    }
  }
  return 0;
}

napi_value ztn_tcp_socket(napi_env env, napi_callback_info info) {
  size_t argc = 7;
  napi_value argv[7];
  int32_t netns, family, port;
  socket_args a;
  memset(&a, 0, sizeof(a));
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 7 || ztn_arg_int32(env, argv[0], "netns", &netns) != 0 ||
      ztn_arg_int32(env, argv[1], "family", &family) != 0 || ztn_arg_int64(env, argv[2], "mark", &a.mark) != 0 ||
      ztn_arg_bool(env, argv[3], "transparent", &a.transparent) != 0 ||
      ztn_arg_bool(env, argv[4], "freebind", &a.freebind) != 0 ||
      ztn_arg_opt_string(env, argv[5], "bindIp", a.bind_ip, sizeof(a.bind_ip), &a.has_bind) != 0 ||
      ztn_arg_int32(env, argv[6], "bindPort", &port) != 0) {
    return NULL;
  }
  if (family != 4 && family != 6) {
    ztn_throw_type(env, "family must be 4 or 6");
    return NULL;
  }
  a.family = family == 6 ? AF_INET6 : AF_INET;
  a.bind_port = port;
  ztn_failure f;
  if (a.has_bind) {
    if (parse_addr(a.bind_ip, port, &a.bind_addr) != 0) {
      fail(&f, EINVAL, "inet_pton", "bind.ip must be a numeric IPv4 or IPv6 address");
      return fd_result(env, -1, &f);
    }
    if (a.bind_addr.family != a.family) {
      fail(&f, EAFNOSUPPORT, "bind", "bind.ip is not of the socket's address family");
      return fd_result(env, -1, &f);
    }
  }
  int fd = create_in_netns(ztn_get_instance(env), netns, a.family, SOCK_STREAM, setup_socket, &a, &f);
  return fd_result(env, fd, &f);
}

/* ---- udpSocket(netns, host, port, mark, reusePort) ---- */

typedef struct {
  ztn_addr addr;
  char host[64];
  int port, reuse_port;
  int64_t mark;
} udp_args;

static int setup_udp(int fd, void *p, ztn_failure *f) {
  udp_args *a = p;
  if (set_common(fd, a->addr.family, a->mark, a->reuse_port, 0, 0, f) != 0) return -1;
  if (a->addr.any6 && set_int(fd, IPPROTO_IPV6, IPV6_V6ONLY, 0, f, "clearing IPV6_V6ONLY (dual-stack)") != 0) return -1;
  if (bind(fd, (struct sockaddr *)&a->addr.ss, a->addr.len) != 0) {
    char what[128];
    describe(what, sizeof(what), "binding", a->host, a->port);
    return fail(f, errno, "bind", what);
  }
  return 0;
}

napi_value ztn_udp_socket(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  int32_t netns, port;
  udp_args a;
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 5 || ztn_arg_int32(env, argv[0], "netns", &netns) != 0 ||
      ztn_arg_string(env, argv[1], "host", a.host, sizeof(a.host)) != 0 ||
      ztn_arg_int32(env, argv[2], "port", &port) != 0 || ztn_arg_int64(env, argv[3], "mark", &a.mark) != 0 ||
      ztn_arg_bool(env, argv[4], "reusePort", &a.reuse_port) != 0) {
    return NULL;
  }
  a.port = port;
  ztn_failure f;
  if (parse_addr(a.host, port, &a.addr) != 0) {
    fail(&f, EINVAL, "inet_pton", "host must be a numeric IPv4 or IPv6 address");
    return fd_result(env, -1, &f);
  }
  int fd = create_in_netns(ztn_get_instance(env), netns, a.addr.family, SOCK_DGRAM, setup_udp, &a, &f);
  return fd_result(env, fd, &f);
}

/* ---- originalDestination(fd) ---- */

static napi_value address_object(napi_env env, const char *ip, int port) {
  napi_value result, v;
  ZTN_CHECK(env, napi_create_object(env, &result));
  ZTN_CHECK(env, napi_create_string_utf8(env, ip, NAPI_AUTO_LENGTH, &v));
  ZTN_CHECK(env, napi_set_named_property(env, result, "ip", v));
  ZTN_CHECK(env, napi_create_int32(env, port, &v));
  ZTN_CHECK(env, napi_set_named_property(env, result, "port", v));
  return result;
}

/* "Not redirected": no conntrack entry, conntrack not loaded, or not a connected socket. */
static int not_redirected(int err) { return err == ENOENT || err == ENOPROTOOPT || err == ENOTCONN; }

napi_value ztn_original_destination(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || ztn_arg_int32(env, argv[0], "fd", &fd) != 0) return NULL;

  struct sockaddr_storage local;
  socklen_t len = sizeof(local);
  if (getsockname(fd, (struct sockaddr *)&local, &len) != 0) {
    ztn_throw_errno(env, "getsockname", errno, "reading the local address");
    return NULL;
  }
  char ip[INET6_ADDRSTRLEN];
  /* IPv4 connections, including those accepted on a dual-stack IPv6 socket (::ffff:a.b.c.d),
   * are tracked by IPv4 conntrack: ask SOL_IP. Native IPv6 connections: SOL_IPV6. */
  int v4 = local.ss_family == AF_INET ||
           (local.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&((struct sockaddr_in6 *)&local)->sin6_addr));
  if (local.ss_family != AF_INET && local.ss_family != AF_INET6) {
    ztn_throw_errno(env, "getsockname", EAFNOSUPPORT, "SO_ORIGINAL_DST needs a TCP/IP socket");
    return NULL;
  }
  napi_value undefined;
  ZTN_CHECK(env, napi_get_undefined(env, &undefined));
  if (v4) {
    struct sockaddr_in dst;
    socklen_t dlen = sizeof(dst);
    memset(&dst, 0, sizeof(dst));
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &dlen) != 0) {
      if (not_redirected(errno)) return undefined;
      ztn_throw_errno(env, "getsockopt", errno, "reading SO_ORIGINAL_DST");
      return NULL;
    }
    inet_ntop(AF_INET, &dst.sin_addr, ip, sizeof(ip));
    return address_object(env, ip, ntohs(dst.sin_port));
  }
  struct sockaddr_in6 dst6;
  socklen_t dlen6 = sizeof(dst6);
  memset(&dst6, 0, sizeof(dst6));
  if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst6, &dlen6) != 0) {
    if (not_redirected(errno)) return undefined;
    ztn_throw_errno(env, "getsockopt", errno, "reading IP6T_SO_ORIGINAL_DST");
    return NULL;
  }
  if (IN6_IS_ADDR_V4MAPPED(&dst6.sin6_addr)) inet_ntop(AF_INET, &dst6.sin6_addr.s6_addr[12], ip, sizeof(ip));
  else inet_ntop(AF_INET6, &dst6.sin6_addr, ip, sizeof(ip));
  return address_object(env, ip, ntohs(dst6.sin6_port));
}

/* ---- socketMark(fd) ---- */

napi_value ztn_socket_mark(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || ztn_arg_int32(env, argv[0], "fd", &fd) != 0) return NULL;
  uint32_t mark = 0;
  socklen_t len = sizeof(mark);
  if (getsockopt(fd, SOL_SOCKET, SO_MARK, &mark, &len) != 0) {
    ztn_throw_errno(env, "getsockopt", errno, "reading SO_MARK");
    return NULL;
  }
  napi_value result;
  ZTN_CHECK(env, napi_create_uint32(env, mark, &result));
  return result;
}
