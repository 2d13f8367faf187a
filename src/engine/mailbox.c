/*
 * mailbox.c — what a worker-thread engine receives from other threads: submitted calls in
 * order and the ids of calls to cancel. The engine guards it with its own lock and takes
 * everything at once; this file only owns the containers.
 */
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "engine/engine.h"

void hf__mailbox_put_call(struct hf__mailbox *mb, struct hf__call *call)
{
	call->next = NULL;
	if (mb->tail)
		mb->tail->next = call;
	else
		mb->head = call;
	mb->tail = call;
}

bool hf__mailbox_put_cancel(struct hf__mailbox *mb, uint64_t call_id)
{
	if (mb->n_cancels == mb->cap_cancels) {
		size_t cap = mb->cap_cancels ? mb->cap_cancels * 2 : 8;
		uint64_t *v = realloc(mb->cancels, cap * sizeof(*v));
		if (!v)
			return false;
		mb->cancels = v;
		mb->cap_cancels = cap;
	}
	mb->cancels[mb->n_cancels++] = call_id;
	return true;
}

void hf__mailbox_post_call(struct hf__mailbox *mb, pthread_mutex_t *lock, pthread_cond_t *wake,
                           struct hf__call *call)
{
	pthread_mutex_lock(lock);
	hf__mailbox_put_call(mb, call);
	pthread_cond_signal(wake);
	pthread_mutex_unlock(lock);
}

void hf__mailbox_post_cancel(struct hf__mailbox *mb, pthread_mutex_t *lock, pthread_cond_t *wake,
                             uint64_t call_id)
{
	pthread_mutex_lock(lock);
	if (hf__mailbox_put_cancel(mb, call_id)) /* else the wait ends at its deadline */
		pthread_cond_signal(wake);
	pthread_mutex_unlock(lock);
}

bool hf__mailbox_empty(const struct hf__mailbox *mb)
{
	return !mb->head && !mb->n_cancels;
}

struct hf__mailbox hf__mailbox_take(struct hf__mailbox *mb)
{
	struct hf__mailbox taken = *mb;
	*mb = (struct hf__mailbox){0};
	return taken;
}

void hf__mailbox_put_back(struct hf__mailbox *mb, struct hf__call *calls)
{
	if (!calls)
		return;
	struct hf__call *tail = calls;
	while (tail->next)
		tail = tail->next;
	tail->next = mb->head;
	mb->head = calls;
	if (!mb->tail)
		mb->tail = tail;
}

void hf__mailbox_release(struct hf__mailbox *mb)
{
	free(mb->cancels);
	*mb = (struct hf__mailbox){0};
}

void hf__timespec_in_ms(struct timespec *ts, clockid_t clock, int64_t ms)
{
	clock_gettime(clock, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}
