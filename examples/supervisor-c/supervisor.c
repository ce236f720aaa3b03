/*
 * weft example `supervisor` (C): a best-effort periodic process (period 1 s)
 * that publishes the setpoint schedule for the `pid` example.
 *
 * Every tick it sends on output port `setpoint` (f64 LE, °C):
 *   50 °C for  0 s <= phase <  4 s
 *   60 °C for  4 s <= phase <  8 s
 *   45 °C for  8 s <= phase < 12 s
 * where phase = tag mod 12 s, and logs (info) whenever the value changes.
 *
 * Imports only from `weft` (port, send, log): capabilities `ports`, `log`.
 * Exports weft_init and weft_tick; no start function, no WASI.
 */
#include "weft.h"

#define CYCLE_NS (12 * WEFT_NS_PER_S)

static int32_t setpoint_port = WEFT_UNKNOWN;
static int32_t last_setpoint = -1; /* whole °C; -1 = nothing sent yet */

/* The scheduled setpoint (whole °C) at logical time `tag`. */
static int32_t schedule(int64_t tag) {
    int64_t phase = tag % CYCLE_NS;
    if (phase < 0) phase += CYCLE_NS;
    if (phase < 4 * WEFT_NS_PER_S) return 50;
    if (phase < 8 * WEFT_NS_PER_S) return 60;
    return 45;
}

/* Appends the decimal form of `v` (v >= 0) at `p`; returns the new end. */
static char *put_uint(char *p, uint64_t v) {
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    while (n > 0) *p++ = tmp[--n];
    return p;
}

static char *put_str(char *p, const char *s) {
    while (*s) *p++ = *s++;
    return p;
}

WEFT_EXPORT("weft_init")
void weft_init(void) {
    setpoint_port = weft_port_named("setpoint");
    if (setpoint_port < 0) weft_log_str(WEFT_LOG_ERROR, "supervisor: no output port `setpoint`");
}

WEFT_EXPORT("weft_tick")
void weft_tick(int64_t tag) {
    int32_t sp = schedule(tag);
    if (sp != last_setpoint) {
        /* "supervisor: setpoint 60 C at t=4 s" */
        char msg[64];
        char *p = put_str(msg, "supervisor: setpoint ");
        p = put_uint(p, (uint64_t)sp);
        p = put_str(p, " C at t=");
        p = put_uint(p, (uint64_t)(tag < 0 ? 0 : tag / WEFT_NS_PER_S));
        p = put_str(p, " s");
        weft_log(WEFT_LOG_INFO, msg, (int32_t)(p - msg));
        last_setpoint = sp;
    }
    int32_t status = weft_send_f64(setpoint_port, (double)sp);
    if (status != WEFT_OK && status != WEFT_FULL && setpoint_port >= 0) {
        weft_log_str(WEFT_LOG_WARN, "supervisor: send failed");
    }
}
