/*
 * Network namespaces: opening and identifying netns files, and switching the
 * calling thread into a pod's namespace and back (setns(CLONE_NEWNET) only
 * affects the calling thread; sockets created meanwhile stay in the pod's
 * namespace for their whole life). Switching back must never fail silently: a
 * thread stranded in a pod's namespace would create every later socket there,
 * so a failed return aborts the process.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "ztunnel-native.h"

#ifndef NS_GET_NSTYPE
#define NS_GET_NSTYPE _IO(0xb7, 0x3) /* linux/nsfs.h, Linux >= 4.11 */
#endif
#ifndef NSFS_MAGIC
#define NSFS_MAGIC 0x6e736673
#endif
#ifndef PROC_SUPER_MAGIC
#define PROC_SUPER_MAGIC 0x9fa0
#endif

int ztn_netns_init(ztn_instance *inst) {
  int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    /* /proc/thread-self is Linux >= 3.17; the per-task path works everywhere. */
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/task/%ld/ns/net", (long)syscall(SYS_gettid));
    fd = open(path, O_RDONLY | O_CLOEXEC);
  }
  if (fd < 0) return errno;
  inst->self_netns = fd;
  inst->has_ns_get_nstype = ioctl(fd, NS_GET_NSTYPE) >= 0;
  return 0;
}

int ztn_netns_enter(ztn_instance *inst, int netns) {
  if (netns < 0) return 0;
  if (setns(netns, CLONE_NEWNET) != 0) return errno;
  (void)inst;
  return 0;
}

void ztn_netns_leave(ztn_instance *inst, int netns) {
  if (netns < 0) return;
  if (setns(inst->self_netns, CLONE_NEWNET) != 0) {
    int err = errno;
    fprintf(stderr,
            "ztunnel native: FATAL: setns back to ztunnel's own network namespace failed (%s); "
            "this thread would stay in a pod's namespace, aborting\n",
            strerror(err));
    abort();
  }
}

/* 0 if fd is a network namespace, ENOTNETNS-style -1 if it is something else, or an errno (> 0). */
static int check_netns(ztn_instance *inst, int fd, const char **syscall) {
  if (inst->has_ns_get_nstype) {
    *syscall = "ioctl(NS_GET_NSTYPE)";
    int type = ioctl(fd, NS_GET_NSTYPE);
    if (type >= 0) return type == CLONE_NEWNET ? 0 : -1;
    /* Every nsfs file answers this ioctl on this kernel: anything else is not a namespace. */
    return errno == ENOTTY || errno == EINVAL ? -1 : errno;
  }
  /* Kernels before 4.11: accept namespace files (nsfs, or proc before 3.19) like ztunnel does. */
  *syscall = "fstatfs";
  struct statfs fs;
  if (fstatfs(fd, &fs) != 0) return errno;
  return fs.f_type == NSFS_MAGIC || fs.f_type == PROC_SUPER_MAGIC ? 0 : -1;
}

static void throw_not_netns(napi_env env, const char *syscall, int fd) {
  char message[160];
  snprintf(message, sizeof(message), "fd %d is not a network namespace", fd);
  ztn_throw_code(env, "ENOTNETNS", syscall, message);
}

napi_value ztn_open_netns(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char path[4096];
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || ztn_arg_string(env, argv[0], "path", path, sizeof(path)) != 0) return NULL;
  ztn_instance *inst = ztn_get_instance(env);

  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    char context[4200];
    snprintf(context, sizeof(context), "opening %s", path);
    ztn_throw_errno(env, "open", errno, context);
    return NULL;
  }
  const char *syscall = NULL;
  int r = check_netns(inst, fd, &syscall);
  if (r != 0) {
    close(fd);
    if (r < 0) {
      char message[4200];
      snprintf(message, sizeof(message), "%s is not a network namespace", path);
      ztn_throw_code(env, "ENOTNETNS", syscall, message);
    } else {
      ztn_throw_errno(env, syscall, r, path);
    }
    return NULL;
  }
  return ztn_fd_value(env, fd);
}

napi_value ztn_netns_id(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || ztn_arg_int32(env, argv[0], "fd", &fd) != 0) return NULL;
  ztn_instance *inst = ztn_get_instance(env);

  const char *syscall = NULL;
  int r = check_netns(inst, fd, &syscall);
  if (r < 0) {
    throw_not_netns(env, syscall, fd);
    return NULL;
  }
  if (r > 0) {
    ztn_throw_errno(env, syscall, r, "checking the namespace type");
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    ztn_throw_errno(env, "fstat", errno, "reading the namespace inode");
    return NULL;
  }
  napi_value result, inode, dev;
  ZTN_CHECK(env, napi_create_object(env, &result));
  ZTN_CHECK(env, napi_create_bigint_uint64(env, (uint64_t)st.st_ino, &inode));
  ZTN_CHECK(env, napi_create_bigint_uint64(env, (uint64_t)st.st_dev, &dev));
  ZTN_CHECK(env, napi_set_named_property(env, result, "inode", inode));
  ZTN_CHECK(env, napi_set_named_property(env, result, "dev", dev));
  return result;
}

napi_value ztn_close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  ZTN_CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || ztn_arg_int32(env, argv[0], "fd", &fd) != 0) return NULL;
  /* On Linux the descriptor is released even when close reports EINTR: never retry. */
  if (close(fd) != 0 && errno != EINTR) {
    ztn_throw_errno(env, "close", errno, "closing a descriptor");
    return NULL;
  }
  return NULL;
}
