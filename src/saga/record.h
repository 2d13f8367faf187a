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
 * type snapshot); from a HF_OP_SAGA_LIST answer, the list as the API shows it (summaries
 * {"id","type","state","created_at_ms","updated_at_ms","error"}). New values, yours; NULL
 * when out of memory. */
json_t *hf__record_view(const json_t *row);
json_t *hf__record_list_view(const json_t *rows);
/* A saga id: 32 lowercase hex characters. */
bool hf__record_id_ok(const char *id);
/* The JSON argument of HF_OP_SAGA_LIST for these filters (NULL: any); text to free(). */
char *hf__record_list_filter(const char *state, const char *type);

#endif /* HF_SAGA_RECORD_H */
