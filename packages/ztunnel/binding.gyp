{
  "targets": [
    {
      "target_name": "ztunnel_native",
      "sources": [
        "native/addon.c",
        "native/args.c",
        "native/errors.c",
        "native/netns.c",
        "native/sockets.c",
        "native/seqpacket.c",
        "native/memory.c"
      ],
      "cflags_c": ["-std=gnu11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration", "-fvisibility=hidden"],
      "defines": ["NAPI_DISABLE_CPP_EXCEPTIONS"]
    }
  ]
}
