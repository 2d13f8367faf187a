/*
 * flights.h — what the files of holdfast-flights share: the services the seed 002 booking
 * saga calls (booking, flight and baggage, pricing, payment), their in-memory state under one
 * lock, the call log, and the holdfast store the flight service declares baggage quotas on.
 */
#ifndef FLIGHTS_H
#define FLIGHTS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "app.h"
#include "holdfast.h"

extern hf_store *fl_store; /* one store for all threads: hf_call is thread-safe */

/* Every service's state is guarded by this one lock; no handler holds it across a call to
 * holdfast or a payment's hold. */
extern pthread_mutex_t fl_mu;

/* The routes of each service (a handler's ctx is unused: the state is shared). */
extern const struct app_route fl_booking_routes[];
extern const size_t fl_booking_n_routes;
extern const struct app_route fl_flight_routes[];
extern const size_t fl_flight_n_routes;
extern const struct app_route fl_payment_routes[];
extern const size_t fl_payment_n_routes;

/* ---- Idempotency keys (main.c): key -> the id of what its first request made. -------- */

#define FL_KEY_MAX 200 /* bytes of an Idempotency-Key */

struct fl_keys {
	char **keys;
	int64_t *ids;
	size_t n, cap;
};

/* Under fl_mu: the id recorded for key, or 0. */
int64_t fl_keys_find(const struct fl_keys *k, const char *key);
/* Under fl_mu: records key -> id; false when out of memory. */
bool fl_keys_add(struct fl_keys *k, const char *key, int64_t id);
void fl_keys_free(struct fl_keys *k);
/* The request's Idempotency-Key: true with *key (NULL when none); false with *r set (400)
 * when it is empty or too long. */
bool fl_idem_key(const struct app_call *k, const char **key);

/* Grows a vector of `size`-byte items to hold one more; false when out of memory. */
bool fl_grow(void **items, size_t size, size_t n, size_t *cap);

/* ---- Service start-up and shutdown. ------------------------------------------------- */

/* Payment: the cards to decline from the command line ("A,B,C"); false with err. */
bool fl_payment_start(const char *decline_list, char *err, size_t errlen);
void fl_booking_stop(void);
void fl_flight_stop(void);
void fl_payment_stop(void);

#endif /* FLIGHTS_H */
