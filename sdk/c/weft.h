/*
 * weft.h — C guest SDK for weft nano-processes.
 *
 * Declares the host functions of the `weft` wasm import module, the ABI
 * status codes and log levels, and small inline helpers. It mirrors
 * crates/weft-abi/src/lib.rs and docs/abi.md exactly.
 *
 * Build a reactor (no WASI imports, no start function) with Debian's clang
 * and wasi-libc, for example:
 *
 *   clang --target=wasm32-wasi --sysroot=/usr -O2 -nostartfiles \
 *         -Wl,--no-entry -o my.wasm my.c
 *
 * Mark the handlers with WEFT_EXPORT so they are exported under the names the
 * host calls:
 *
 *   WEFT_EXPORT("weft_init") void weft_init(void) { ... }
 *   WEFT_EXPORT("weft_tick") void weft_tick(int64_t tag) { ... }
 *   WEFT_EXPORT("weft_message")
 *   void weft_message(int32_t port, const uint8_t *data, int32_t len, int64_t tag);
 *   WEFT_EXPORT("weft_alloc") void *weft_alloc(int32_t len);  // required with weft_message
 *
 * Capabilities: each import needs one granted in the app manifest, and only
 * the functions a module calls are imported (declared-but-unused ones are
 * dropped by the linker). See the table below.
 *
 * Only freestanding headers are used, so this file also works without a libc.
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- attributes --------------------------------------------------------- */

/* Declares a host function `name` of the `weft` import module. */
#define WEFT_IMPORT(name) __attribute__((import_module("weft"), import_name(name)))

/* Exports a function under `name` (e.g. "weft_tick"). */
#define WEFT_EXPORT(name) __attribute__((export_name(name), visibility("default")))

/* ---- status codes (negative results of host functions) ------------------ */

#define WEFT_OK 0
/* Nothing there: empty mailbox, missing key. */
#define WEFT_NOT_FOUND (-1)
/* The guest buffer is too small; the item stays where it was. */
#define WEFT_BUFFER_TOO_SMALL (-2)
/* Over the process's max_message limit; refused. */
#define WEFT_TOO_LARGE (-3)
/* Unknown port/device handle or name, or a port used in the wrong direction. */
#define WEFT_UNKNOWN (-4)
/* The device exists but this process was not granted it. */
#define WEFT_DENIED (-5)
/* The outbox for this call is full. */
#define WEFT_FULL (-6)

/* ---- log levels ----------------------------------------------------------- */

#define WEFT_LOG_ERROR 0
#define WEFT_LOG_WARN 1
#define WEFT_LOG_INFO 2
#define WEFT_LOG_DEBUG 3
#define WEFT_LOG_TRACE 4

/* Logical time: tags are nanoseconds since the start of the app. */
typedef int64_t weft_tag_t;
#define WEFT_NS_PER_MS INT64_C(1000000)
#define WEFT_NS_PER_S INT64_C(1000000000)

/* ---- host imports (module "weft") --------------------------------------- */
/* Pointers and lengths are offsets into this module's linear memory.      */

/* capability `log`: log a message of `len` bytes at `level` (WEFT_LOG_*). */
WEFT_IMPORT("log") void weft_log(int32_t level, const char *ptr, int32_t len);

/* capability `time`: the current logical tag (ns). */
WEFT_IMPORT("now") int64_t weft_now(void);

/* capability `random`: next value of the process's seeded PRNG. */
WEFT_IMPORT("random") int64_t weft_random(void);

/* capability `ports`: handle of a declared input/output port, or WEFT_UNKNOWN. */
WEFT_IMPORT("port") int32_t weft_port(const char *name, int32_t name_len);

/* capability `ports`: WEFT_OK, WEFT_TOO_LARGE, WEFT_UNKNOWN (not an output) or WEFT_FULL. */
WEFT_IMPORT("send") int32_t weft_send(int32_t port, const void *ptr, int32_t len);

/* capability `ports`: length of the next visible message copied to `ptr`,
 * WEFT_NOT_FOUND when none, WEFT_BUFFER_TOO_SMALL (message stays queued). */
WEFT_IMPORT("recv") int32_t weft_recv(int32_t port, void *ptr, int32_t cap);

/* capability `kv`: value length, WEFT_NOT_FOUND or WEFT_BUFFER_TOO_SMALL. */
WEFT_IMPORT("kv_get")
int32_t weft_kv_get(const void *key, int32_t key_len, void *val, int32_t val_cap);

/* capability `kv`: WEFT_OK or WEFT_TOO_LARGE (key + value over max_message). */
WEFT_IMPORT("kv_set")
int32_t weft_kv_set(const void *key, int32_t key_len, const void *val, int32_t val_len);

/* capability `kv`: WEFT_OK or WEFT_NOT_FOUND. */
WEFT_IMPORT("kv_delete") int32_t weft_kv_delete(const void *key, int32_t key_len);

/* capability `device:<name>`: handle, WEFT_UNKNOWN (no such device) or WEFT_DENIED. */
WEFT_IMPORT("device_open") int32_t weft_device_open(const char *name, int32_t name_len);

/* capability `device:<name>`: bytes written, WEFT_UNKNOWN or WEFT_BUFFER_TOO_SMALL. */
WEFT_IMPORT("device_read") int32_t weft_device_read(int32_t dev, void *ptr, int32_t cap);

/* capability `device:<name>`: WEFT_OK or WEFT_UNKNOWN. */
WEFT_IMPORT("device_write") int32_t weft_device_write(int32_t dev, const void *ptr, int32_t len);

/* ---- inline helpers ------------------------------------------------------- */
/* Each helper only imports the host function it wraps when it is used.     */

/* Length of a NUL-terminated string (no libc needed). */
static inline int32_t weft_strlen(const char *s) {
    return (int32_t)__builtin_strlen(s);
}

/* Logs a NUL-terminated string at `level`. */
static inline void weft_log_str(int32_t level, const char *msg) {
    weft_log(level, msg, weft_strlen(msg));
}

/* Resolves a port by NUL-terminated name: handle or WEFT_UNKNOWN. */
static inline int32_t weft_port_named(const char *name) {
    return weft_port(name, weft_strlen(name));
}

/* Opens a device by NUL-terminated name: handle, WEFT_UNKNOWN or WEFT_DENIED. */
static inline int32_t weft_device_named(const char *name) {
    return weft_device_open(name, weft_strlen(name));
}

/* Sends one double as 8 bytes little-endian (wasm is little-endian). */
static inline int32_t weft_send_f64(int32_t port, double value) {
    return weft_send(port, &value, (int32_t)sizeof value);
}

/* Receives the next message and decodes its first 8 bytes as a double.
 * Returns 1 and stores into *out, or 0 when no (long enough) message is visible. */
static inline int weft_recv_f64(int32_t port, double *out) {
    uint8_t buf[8];
    int32_t n = weft_recv(port, buf, (int32_t)sizeof buf);
    if (n < 8) return 0;
    __builtin_memcpy(out, buf, sizeof *out);
    return 1;
}

/* Drains the port and keeps the last double; returns 1 if there was one. */
static inline int weft_latest_f64(int32_t port, double *out) {
    int got = 0;
    while (weft_recv_f64(port, out)) got = 1;
    return got;
}

/* A device sample is a 24-byte header, then one little-endian double per
 * value (docs/devices.md): byte 0 quality (0 good, 1 stale, 2 disconnected,
 * 3 exception, 4 unavailable), byte 1 exception code, bytes 4..8 sequence,
 * 8..16 age in ns, 16..24 source time in ns since the Unix epoch. */
#define WEFT_SAMPLE_HEADER 24
#define WEFT_QUALITY_GOOD 0

/* Reads the first value of a good device sample; returns 1 on success, 0
 * when the read failed or the sample is not good (hold the last value). */
static inline int weft_device_read_f64(int32_t dev, double *out) {
    uint8_t buf[WEFT_SAMPLE_HEADER + 8 * 16];
    int32_t n = weft_device_read(dev, buf, (int32_t)sizeof buf);
    if (n < WEFT_SAMPLE_HEADER + 8 || buf[0] != WEFT_QUALITY_GOOD) return 0;
    __builtin_memcpy(out, buf + WEFT_SAMPLE_HEADER, sizeof *out);
    return 1;
}

/* Writes an 8-byte little-endian double to a device: WEFT_OK or WEFT_UNKNOWN. */
static inline int32_t weft_device_write_f64(int32_t dev, double value) {
    return weft_device_write(dev, &value, (int32_t)sizeof value);
}

/* Tag conversions. */
static inline double weft_tag_secs(weft_tag_t tag) { return (double)tag * 1e-9; }
static inline weft_tag_t weft_tag_from_ms(int64_t ms) { return ms * WEFT_NS_PER_MS; }

/* A short name of a status code, for log messages. */
static inline const char *weft_status_str(int32_t status) {
    switch (status) {
    case WEFT_OK: return "ok";
    case WEFT_NOT_FOUND: return "not found";
    case WEFT_BUFFER_TOO_SMALL: return "buffer too small";
    case WEFT_TOO_LARGE: return "too large";
    case WEFT_UNKNOWN: return "unknown";
    case WEFT_DENIED: return "denied";
    case WEFT_FULL: return "full";
    default: return status >= 0 ? "ok" : "unexpected status";
    }
}

#ifdef __cplusplus
}
#endif

#endif /* WEFT_H */
