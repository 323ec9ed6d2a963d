/*
 * Argument access for the raw functions. native.ts validates before calling, so
 * a failure here is a programming error and becomes a TypeError.
 */
#include <stdio.h>
#include <string.h>

#include "ztunnel-native.h"

static int type_error(napi_env env, const char *name, const char *expected) {
  char message[256];
  snprintf(message, sizeof(message), "%s must be %s", name, expected);
  ztn_throw_type(env, message);
  return -1;
}

int ztn_arg_int32(napi_env env, napi_value v, const char *name, int32_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return type_error(env, name, "a number");
  if (napi_get_value_int32(env, v, out) != napi_ok) return type_error(env, name, "a 32-bit integer");
  return 0;
}

int ztn_arg_int64(napi_env env, napi_value v, const char *name, int64_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return type_error(env, name, "a number");
  if (napi_get_value_int64(env, v, out) != napi_ok) return type_error(env, name, "an integer");
  return 0;
}

int ztn_arg_bool(napi_env env, napi_value v, const char *name, int *out) {
  bool b;
  if (napi_get_value_bool(env, v, &b) != napi_ok) return type_error(env, name, "a boolean");
  *out = b ? 1 : 0;
  return 0;
}

int ztn_arg_string(napi_env env, napi_value v, const char *name, char *buf, size_t size) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return type_error(env, name, "a string");
  if (len + 1 > size) return type_error(env, name, "a shorter string");
  if (napi_get_value_string_utf8(env, v, buf, size, &len) != napi_ok) return type_error(env, name, "a string");
  if (strlen(buf) != len) return type_error(env, name, "a string without NUL characters");
  return 0;
}

int ztn_arg_opt_string(napi_env env, napi_value v, const char *name, char *buf, size_t size, int *present) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return type_error(env, name, "a string or null");
  if (t == napi_null || t == napi_undefined) {
    buf[0] = '\0';
    *present = 0;
    return 0;
  }
  *present = 1;
  return ztn_arg_string(env, v, name, buf, size);
}

int ztn_arg_fds(napi_env env, napi_value v, const char *name, int *fds, size_t max, size_t *count) {
  bool is_array = false;
  uint32_t n = 0;
  if (napi_is_array(env, v, &is_array) != napi_ok || !is_array) return type_error(env, name, "an array of fds");
  if (napi_get_array_length(env, v, &n) != napi_ok) return type_error(env, name, "an array of fds");
  if (n > max) return type_error(env, name, "an array of at most 253 fds (SCM_MAX_FD)");
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    int32_t fd;
    if (napi_get_element(env, v, i, &e) != napi_ok) return type_error(env, name, "an array of fds");
    if (ztn_arg_int32(env, e, name, &fd) != 0) return -1;
    if (fd < 0) return type_error(env, name, "an array of non-negative fds");
    fds[i] = fd;
  }
  *count = n;
  return 0;
}
