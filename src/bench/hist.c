/*
 * hist.c — log-bucket latency histogram: values below 64 µs are exact, above that each power
 * of two is split in 32 buckets. Adding is a few instructions, so it sits on the hot path.
 */
#include "hist.h"

#include <string.h>

void hfb_hist_init(struct hfb_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min = UINT64_MAX;
}

static unsigned bucket_of(uint64_t v)
{
	if (v < 64)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned shift = msb - 5; /* v >> shift lands in [32, 63] */
	unsigned idx = 64 + (msb - 6) * 32 + (unsigned)((v >> shift) - 32);
	return idx < HFB_HIST_BUCKETS ? idx : HFB_HIST_BUCKETS - 1;
}

/* The lower bound and width of bucket `idx`. */
static void bucket_range(unsigned idx, double *lo, double *width)
{
	if (idx < 64) {
		*lo = idx;
		*width = 1;
		return;
	}
	unsigned k = idx - 64, msb = 6 + k / 32, shift = msb - 5;
	*lo = (double)((uint64_t)(32 + k % 32) << shift);
	*width = (double)((uint64_t)1 << shift);
}

void hfb_hist_add(struct hfb_hist *h, int64_t us)
{
	uint64_t v = us < 0 ? 0 : (uint64_t)us;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
	if (v < h->min)
		h->min = v;
	h->buckets[bucket_of(v)]++;
}

void hfb_hist_merge(struct hfb_hist *into, const struct hfb_hist *from)
{
	into->count += from->count;
	into->sum += from->sum;
	if (from->max > into->max)
		into->max = from->max;
	if (from->min < into->min)
		into->min = from->min;
	for (unsigned i = 0; i < HFB_HIST_BUCKETS; i++)
		into->buckets[i] += from->buckets[i];
}

double hfb_hist_quantile(const struct hfb_hist *h, double q)
{
	if (h->count == 0)
		return 0;
	if (q >= 1.0)
		return (double)h->max;
	/* rank of the value wanted: the ceil(q * count)-th smallest, at least the first */
	uint64_t rank = (uint64_t)(q * (double)h->count);
	if ((double)rank < q * (double)h->count)
		rank++;
	if (rank == 0)
		rank = 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HFB_HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= rank) {
			double lo, width;
			bucket_range(i, &lo, &width);
			double v = width > 1 ? lo + width / 2 : lo;
			if (v > (double)h->max)
				v = (double)h->max;
			if (v < (double)h->min)
				v = (double)h->min;
			return v;
		}
	}
	return (double)h->max;
}

double hfb_hist_mean(const struct hfb_hist *h)
{
	return h->count ? (double)h->sum / (double)h->count : 0;
}
