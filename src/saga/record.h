/*
 * record.h — the saga record (record.c): making one, changing its timeline, and the views
 * the API shows. Internal to src/saga/.
 */
#ifndef HF_SAGA_RECORD_H
#define HF_SAGA_RECORD_H

#include "saga/saga.h"

/* A new record in state "running" at step 0; NULL when out of memory. */
json_t *hf__record_new(const char *id, const char *type_name, const json_t *def,
                       const struct hf__saga_type *t, const json_t *input, int64_t now);
/* Appends a timeline entry (phase "action" or "compensation"; `detail` may be NULL). */
void hf__record_log(json_t *rec, int64_t now, const char *step, const char *phase,
                    const char *what, int attempt, const char *detail);
json_t *hf__record_error(const char *code, const char *message); /* {"code","message"} */
/* From a stored row ({"version",...,"record"}): the record as GET shows it (no tokens, no
 * type snapshot), and the short form of lists. New values, yours; NULL when out of memory. */
json_t *hf__record_view(const json_t *row);
json_t *hf__record_summary(const json_t *row);

#endif /* HF_SAGA_RECORD_H */
