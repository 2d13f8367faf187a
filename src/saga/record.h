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

/* ---- The steps of hf_saga_start and hf_saga_resume (api.c), shared with holdfastd's
 * asynchronous routes. ---- */

/* Checks a start's type name, key and input (a JSON object of at most 64 KiB): *input is the
 * parsed object (yours), or NULL with `err` set. */
int hf__saga_input_parse(const char *type, const char *input_json, const char *key,
                         json_t **input, hf_error *err);
/* The HF_OP_SAGA_SAVE argument that starts a saga of the type (its stored row) with a new id
 * (written to `id`); text to free(), or NULL with `err` set. */
char *hf__saga_start_arg(const char *type, const json_t *type_row, const json_t *input,
                         const char *key, int64_t now, char id[HF_ID_LEN + 1], hf_error *err);
/* A start that replayed its key must name the same type and input: HF_OK or
 * HF_EIDEMMISMATCH. `row` is the saga's stored row. */
int hf__saga_replay_check(const json_t *row, const char *type, const json_t *input,
                          hf_error *err);
/* What resuming the saga of `row` takes: HF_ESAGASTATE if it is at rest (completed, failed);
 * else HF_OK and, for a saga parked as compensation_failed, *arg = the HF_OP_SAGA_SAVE
 * argument (text to free(); the save names the row's version), or NULL when it only needs a
 * wake (running, compensating). `row` is changed. */
int hf__saga_resume_arg(json_t *row, int64_t now, char **arg, hf_error *err);

/* ---- TCC transactions (tcc.c): a saga of a generated type, docs/sagas.md "TCC". ---- */

#define HF__TX_TYPE "transaction" /* the saga type name every transaction runs under */
#define HF__TX_PARTICIPANTS_MAX 31 /* 2 steps each, plus the deadline's 2: 64 steps */

/* Checks a transaction's request ({"participants","timeout_ms"}); on HF_OK *input is the saga's
 * input (the request with its defaults) and *type_row {"type": the generated saga type}, both
 * yours. Else HF_EINVAL with a message naming the field. */
int hf__tx_parse(const json_t *body, json_t **input, json_t **type_row, hf_error *err);
bool hf__tx_row_is(const json_t *row); /* the stored saga row is a transaction's */
/* The transaction's view of its saga's row (GET /v1/transactions/{id}); new, yours. */
json_t *hf__tx_view(const json_t *row);

#endif /* HF_SAGA_RECORD_H */
