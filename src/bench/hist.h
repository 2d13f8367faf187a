/*
 * hist.h — the latency histogram of holdfast-bench: HDR-style log buckets (32 sub-buckets
 * per power of two, so a percentile is within ~3% of the true value) over microseconds.
 * Fixed size, no allocation: one per thread and metric, merged at the end.
 */
#ifndef HFB_HIST_H
#define HFB_HIST_H

#include <stdint.h>

#define HFB_HIST_BUCKETS (64 + 58 * 32)

struct hfb_hist {
	uint64_t count;
	uint64_t sum; /* microseconds, for the mean */
	uint64_t max;
	uint64_t min;
	uint64_t buckets[HFB_HIST_BUCKETS];
};

void hfb_hist_init(struct hfb_hist *h);
void hfb_hist_add(struct hfb_hist *h, int64_t us); /* negatives count as 0 */
void hfb_hist_merge(struct hfb_hist *into, const struct hfb_hist *from);
/* The value at quantile q (0..1): the middle of its bucket, capped by the maximum seen.
 * 0 for an empty histogram. */
double hfb_hist_quantile(const struct hfb_hist *h, double q);
double hfb_hist_mean(const struct hfb_hist *h);

#endif
