/*
 * Returning freed heap memory to the kernel. glibc's malloc keeps memory freed
 * after a burst (TLS records, HTTP/2 frames) in its arenas, so a ztunnel's RSS
 * stays at its high-water mark; malloc_trim(0) releases the free pages, also
 * those in the middle of the heap (madvise), which MALLOC_TRIM_THRESHOLD_
 * cannot. Off glibc this is a no-op that reports false.
 */
#include <node_api.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "ztunnel-native.h"

napi_value ztn_malloc_trim(napi_env env, napi_callback_info info) {
  (void)info;
  int released = 0;
#if defined(__GLIBC__)
  released = malloc_trim(0);
#endif
  napi_value result;
  ZTN_CHECK(env, napi_get_boolean(env, released != 0, &result));
  return result;
}
