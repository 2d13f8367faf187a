/*
 * consumer.c — a program outside the tree that uses libholdfast only through the installed
 * header and pkg-config file: takes and releases a lock on a file: store.
 */
#include <holdfast.h>
#include <stdio.h>

int main(int argc, char **argv)
{
	if (argc != 2)
		return 2;
	hf_store *store;
	hf_error err;
	if (hf_open(argv[1], NULL, &store, &err) != HF_OK) {
		fprintf(stderr, "open: %s\n", err.message);
		return 1;
	}
	hf_claim claim = {.name = "job", .units = 1, .capacity = 1};
	hf_acquire_req req = {.owner = "consumer", .claims = &claim, .n_claims = 1, .ttl_ms = 1000};
	hf_hold *hold;
	int rc = hf_acquire(store, &req, &hold, &err);
	if (rc == HF_OK) {
		printf("fence %lld\n", (long long)hold->parts[0].fence);
		rc = hf_release(store, hold->id, hold->token, NULL, &err);
		hf_hold_free(hold);
	}
	if (rc != HF_OK)
		fprintf(stderr, "%s: %s\n", hf_err_name(rc), err.message);
	hf_close(store);
	return rc == HF_OK ? 0 : 1;
}
