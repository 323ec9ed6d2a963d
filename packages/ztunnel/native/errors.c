/*
 * Errors thrown to JavaScript. A failed system call becomes an Error with
 * `syscall` and `errno` (native.ts turns the errno into its name, e.g.
 * EADDRINUSE); addon-specific failures carry a `code` such as ENOTNETNS.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ztunnel-native.h"

static void throw_with(napi_env env, const char *code, const char *syscall, int err, const char *message) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  napi_value msg, error, value;
  if (napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &msg) != napi_ok ||
      napi_create_error(env, NULL, msg, &error) != napi_ok) {
    napi_throw_error(env, code, message);
    return;
  }
  if (code != NULL && napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &value) == napi_ok) {
    napi_set_named_property(env, error, "code", value);
  }
  if (syscall != NULL && napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &value) == napi_ok) {
    napi_set_named_property(env, error, "syscall", value);
  }
  if (err != 0 && napi_create_int32(env, err, &value) == napi_ok) {
    napi_set_named_property(env, error, "errno", value);
  }
  napi_throw(env, error);
}

void ztn_throw_errno(napi_env env, const char *syscall, int err, const char *context) {
  char message[512];
  /* strerror returns static text for known errnos (glibc >= 2.32, musl). */
  snprintf(message, sizeof(message), "%s: %s", context, strerror(err));
  throw_with(env, NULL, syscall, err, message);
}

void ztn_throw_code(napi_env env, const char *code, const char *syscall, const char *message) {
  throw_with(env, code, syscall, 0, message);
}

void ztn_throw_type(napi_env env, const char *message) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  napi_throw_type_error(env, NULL, message);
}

void ztn_throw_napi_failure(napi_env env, const char *what) {
  bool pending = false;
  if (napi_is_exception_pending(env, &pending) == napi_ok && pending) return;
  const napi_extended_error_info *info = NULL;
  char message[512];
  napi_get_last_error_info(env, &info);
  snprintf(message, sizeof(message), "node-api call failed (%s): %s", what,
           info != NULL && info->error_message != NULL ? info->error_message : "unknown error");
  napi_throw_error(env, "EINTERNAL", message);
}

void ztn_report_callback_exception(napi_env env) {
  napi_value exception;
  if (napi_get_and_clear_last_exception(env, &exception) == napi_ok) {
    /* Same path as an exception thrown from any other event-loop callback: 'uncaughtException'. */
    napi_fatal_exception(env, exception);
  }
}

napi_value ztn_fd_value(napi_env env, int fd) {
  napi_value result;
  if (napi_create_int32(env, fd, &result) != napi_ok) {
    close(fd);
    ztn_throw_napi_failure(env, "napi_create_int32");
    return NULL;
  }
  return result;
}
