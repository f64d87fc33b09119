/*
 * platform.h — what the drivers and the binding need from the operating
 * system: a monotonic clock, sleeping, a seed for retry jitter, and the
 * reading of an HTTP-date (Retry-After).  Plain C, no Lua.
 */
#ifndef APIFY_KVS_PLATFORM_H
#define APIFY_KVS_PLATFORM_H

#include <stdint.h>

#pragma GCC visibility push(hidden)

double   kvs_monotonic(void);               /* seconds, CLOCK_MONOTONIC */
void     kvs_sleep(double seconds);         /* <= 0: returns at once; EINTR resumes */
uint64_t kvs_random_seed(const void *salt); /* differs per call, process and salt */
/* Seconds from now until the HTTP-date `value` (negative: past); -1 when it
 * is not one.  The core's http_date_delay hook. */
double   kvs_http_date_delay(const char *value);

#pragma GCC visibility pop

#endif
