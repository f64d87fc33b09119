/*
 * platform.c — the clock, sleep, random seed and HTTP-date reading that the
 * drivers and the binding use; the sans-I/O core gets time passed in instead.
 * HTTP-dates are read by libcurl (curl_getdate).
 */
#include <errno.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "platform.h"

double kvs_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void kvs_sleep(double seconds)
{
    struct timespec ts;
    if (!(seconds > 0)) return;
    if (seconds > 86400) seconds = 86400;   /* the core caps waits far below; time_t stays defined */
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

uint64_t kvs_random_seed(const void *salt)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ((uint64_t)ts.tv_sec * 1000000007ull) ^ (uint64_t)ts.tv_nsec
         ^ ((uint64_t)(uintptr_t)salt << 16) ^ (uint64_t)getpid();
}

double kvs_http_date_delay(const char *value)
{
    time_t t = curl_getdate(value, NULL);
    if (t == (time_t)-1) return -1;
    return difftime(t, time(NULL));
}
