/*
 * fuzz_history.c — fuzz target: holdfast-check itself (src/check/), which reads histories
 * from wherever they were recorded. Any bytes are read as a history; a history that reads
 * is checked (search bound 10,000 states per resource). Properties: no crash, leak or UB;
 * the verdict is 0, 1 or 3; a history that read is checked the same way twice.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	FILE *in = fmemopen((void *)data, size ? size : 1, "r");
	if (!in)
		return 0;
	if (size == 0) { /* fmemopen wants a size: read nothing */
		fclose(in);
		in = fopen("/dev/null", "r");
		if (!in)
			return 0;
	}
	struct hfc_history h;
	char err[256];
	int rc = hfc_history_read(in, &h, err, sizeof(err));
	fclose(in);
	if (rc != 0) {
		FUZZ_CHECK(err[0], "a refused history without a message");
		return 0;
	}
	struct hfc_options opt;
	hfc_options_init(&opt);
	opt.search_bound = 10000;
	opt.fifo = size % 2;
	struct hfc_report a, b;
	int v1 = hfc_check(&h, &opt, NULL, &a);
	int v2 = hfc_check(&h, &opt, NULL, &b);
	FUZZ_CHECK(v1 == 0 || v1 == 1 || v1 == 3 || v1 == -1, "verdict %d", v1);
	FUZZ_CHECK(v1 == v2 && a.violations == b.violations && a.states == b.states,
	           "two checks of one history disagree: %d/%zu vs %d/%zu", v1, a.violations, v2,
	           b.violations);
	hfc_history_release(&h);
	return 0;
}
