/*
 * map.c — the two containers the embedded engine needs: a chained hash map from string
 * keys (FNV-1a) that grows at load 1, and a binary min-heap whose items know their position.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/embedded/embedded.h"

struct hf__map_entry {
	struct hf__map_entry *next;
	const char *key;
	uint64_t hash;
	void *value;
};

void hf__map_init(struct hf__map *map)
{
	memset(map, 0, sizeof(*map));
}

void hf__map_release(struct hf__map *map)
{
	for (size_t i = 0; i < map->n_buckets; i++) {
		struct hf__map_entry *e = map->buckets[i];
		while (e) {
			struct hf__map_entry *next = e->next;
			free(e);
			e = next;
		}
	}
	free(map->buckets);
	memset(map, 0, sizeof(*map));
}

static struct hf__map_entry **find_slot(const struct hf__map *map, const char *key, uint64_t h)
{
	struct hf__map_entry **slot = &map->buckets[h & (map->n_buckets - 1)];
	while (*slot && ((*slot)->hash != h || strcmp((*slot)->key, key) != 0))
		slot = &(*slot)->next;
	return slot;
}

void *hf__map_get(const struct hf__map *map, const char *key)
{
	if (map->count == 0)
		return NULL;
	struct hf__map_entry *e = *find_slot(map, key, hf__hash_str(key));
	return e ? e->value : NULL;
}

/* Rehashes into n buckets (a power of two). */
static int resize(struct hf__map *map, size_t n)
{
	struct hf__map_entry **buckets = calloc(n, sizeof(*buckets));
	if (!buckets)
		return HF_ENOMEM;
	for (size_t i = 0; i < map->n_buckets; i++) {
		struct hf__map_entry *e = map->buckets[i];
		while (e) {
			struct hf__map_entry *next = e->next;
			e->next = buckets[e->hash & (n - 1)];
			buckets[e->hash & (n - 1)] = e;
			e = next;
		}
	}
	free(map->buckets);
	map->buckets = buckets;
	map->n_buckets = n;
	return HF_OK;
}

static int grow(struct hf__map *map)
{
	return resize(map, map->n_buckets ? map->n_buckets * 2 : 64);
}

int hf__map_reserve(struct hf__map *map, size_t count)
{
	size_t n = map->n_buckets ? map->n_buckets : 64;
	while (n < count && n <= SIZE_MAX / 4)
		n *= 2;
	return n > map->n_buckets ? resize(map, n) : HF_OK;
}

/* The entry of `key`, or a new one (*added; value NULL, key the caller's) linked in. */
static struct hf__map_entry *entry_of(struct hf__map *map, const char *key, bool *added)
{
	if (map->count >= map->n_buckets && grow(map) != HF_OK)
		return NULL;
	uint64_t h = hf__hash_str(key);
	struct hf__map_entry **slot = find_slot(map, key, h);
	*added = !*slot;
	if (*slot)
		return *slot;
	struct hf__map_entry *e = malloc(sizeof(*e));
	if (!e)
		return NULL;
	*e = (struct hf__map_entry){.next = NULL, .key = key, .hash = h, .value = NULL};
	*slot = e;
	map->count++;
	return e;
}

void *hf__map_intern(struct hf__map *map, const char *key, size_t key_off)
{
	bool added;
	struct hf__map_entry *e = entry_of(map, key, &added);
	if (!e || !added)
		return e ? e->value : NULL;
	size_t len = strlen(key) + 1;
	char *v = malloc(key_off + len);
	if (!v) {
		hf__map_remove(map, key);
		return NULL;
	}
	memset(v, 0, key_off);
	e->key = memcpy(v + key_off, key, len);
	e->value = v;
	return v;
}

/* Puts (replace) or adds (!replace: an existing entry stays, *present is its value). */
static int put(struct hf__map *map, const char *key, void *value, bool replace, void **present)
{
	bool added;
	struct hf__map_entry *e = entry_of(map, key, &added);
	if (!e)
		return HF_ENOMEM;
	if (!added && !replace) {
		*present = e->value;
		return HF_OK;
	}
	e->key = key;
	e->value = value;
	return HF_OK;
}

int hf__map_put(struct hf__map *map, const char *key, void *value)
{
	return put(map, key, value, true, NULL);
}

int hf__map_add(struct hf__map *map, const char *key, void *value, void **present)
{
	*present = NULL;
	return put(map, key, value, false, present);
}

void *hf__map_remove(struct hf__map *map, const char *key)
{
	if (map->count == 0)
		return NULL;
	struct hf__map_entry **slot = find_slot(map, key, hf__hash_str(key));
	struct hf__map_entry *e = *slot;
	if (!e)
		return NULL;
	void *value = e->value;
	*slot = e->next;
	free(e);
	map->count--;
	return value;
}

void *hf__map_next(const struct hf__map *map, size_t *pos, void **cursor)
{
	struct hf__map_entry *e = *cursor;
	if (e && e->next) {
		*cursor = e->next;
		return e->next->value;
	}
	while (*pos < map->n_buckets) {
		e = map->buckets[(*pos)++];
		if (e) {
			*cursor = e;
			return e->value;
		}
	}
	return NULL;
}

/* ---- heap ---- */

static void heap_set(struct hf__heap *heap, size_t i, struct hf__heap_node node)
{
	heap->nodes[i] = node;
	*node.slot = i;
}

static void sift_up(struct hf__heap *heap, size_t i)
{
	struct hf__heap_node node = heap->nodes[i];
	while (i > 0) {
		size_t parent = (i - 1) / 2;
		if (heap->nodes[parent].key <= node.key)
			break;
		heap_set(heap, i, heap->nodes[parent]);
		i = parent;
	}
	heap_set(heap, i, node);
}

static void sift_down(struct hf__heap *heap, size_t i)
{
	struct hf__heap_node node = heap->nodes[i];
	for (;;) {
		size_t child = 2 * i + 1;
		if (child >= heap->count)
			break;
		if (child + 1 < heap->count && heap->nodes[child + 1].key < heap->nodes[child].key)
			child++;
		if (heap->nodes[child].key >= node.key)
			break;
		heap_set(heap, i, heap->nodes[child]);
		i = child;
	}
	heap_set(heap, i, node);
}

int hf__heap_push(struct hf__heap *heap, int64_t key, void *item, size_t *slot)
{
	if (heap->count == heap->cap) {
		size_t cap = heap->cap ? heap->cap * 2 : 64;
		struct hf__heap_node *nodes = realloc(heap->nodes, cap * sizeof(*nodes));
		if (!nodes)
			return HF_ENOMEM;
		heap->nodes = nodes;
		heap->cap = cap;
	}
	heap->nodes[heap->count] = (struct hf__heap_node){.key = key, .item = item, .slot = slot};
	*slot = heap->count;
	sift_up(heap, heap->count++);
	return HF_OK;
}

void hf__heap_remove(struct hf__heap *heap, size_t *slot)
{
	size_t i = *slot;
	if (i == HF__HEAP_NONE)
		return;
	*slot = HF__HEAP_NONE;
	heap->count--;
	if (i == heap->count)
		return;
	heap_set(heap, i, heap->nodes[heap->count]);
	/* The moved node may belong above or below; at most one of these moves it. */
	sift_up(heap, i);
	sift_down(heap, i);
}

void *hf__heap_top(const struct hf__heap *heap, int64_t *key)
{
	if (heap->count == 0)
		return NULL;
	if (key)
		*key = heap->nodes[0].key;
	return heap->nodes[0].item;
}

void hf__heap_release(struct hf__heap *heap)
{
	free(heap->nodes);
	memset(heap, 0, sizeof(*heap));
}
