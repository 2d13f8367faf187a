/*
 * run.h — running one saga (run.c), for the orchestrator's threads. Internal to src/saga/.
 */
#ifndef HF_SAGA_RUN_H
#define HF_SAGA_RUN_H

#include "engine/engine.h"
#include "saga/saga.h"

/* Runs the saga from its last checkpoint until it rests (completed, failed,
 * compensation_failed): HF_OK. HF_ECANCELED when *stop became true (the saga stays as its
 * last checkpoint left it, to be resumed); another code when the store failed (retry later). */
int hf__saga_run(hf_store *store, const char *id, const _Atomic bool *stop, hf_error *err);
/* Called by an orchestrator thread as it ends: closes what it kept (its AMQP connection). */
void hf__saga_run_thread_end(void);

#endif /* HF_SAGA_RUN_H */
