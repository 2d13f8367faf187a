/*
 * crashvfs.c — the power-loss and I/O-error VFS of the reliability tests (crashvfs.h).
 *
 * The model is SQLite's own crash test (src/test6.c): a write is durable only once its file
 * has been synced; at a power cut each write made since its file's last sync may be lost,
 * kept, or torn (a prefix of whole 512-byte sectors kept, the rest as before); a file's name
 * (creation, rename, deletion) is durable only once its directory has been synced. The live
 * files on disk are the unix VFS's as always; this layer only keeps, beside them, the durable
 * image of each file (its content as of its last sync) and the list of writes since.
 *
 * Directory syncs come from two places: the unix VFS syncs the directory the first time it
 * syncs a journal or WAL file it created (and on xDelete with dirSync), and the engine itself
 * (journal.c: rename + fsync of the directory when it creates a store). The engine's
 * rename(2), unlink(2) and fsync(2) reach us by the linker's --wrap of the test binary.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crashvfs.h"

#define SECTOR 512

/* One write (or truncation: data NULL, len = new size) made since the file's last sync. */
struct op {
	struct op *next;
	sqlite3_int64 off;
	size_t len;
	unsigned char *data;
};

/* A file as the disk would keep it: its name and content as of the last syncs. */
struct dfile {
	struct dfile *next;
	char live[PATH_MAX];    /* its name now; "" once deleted */
	char durable[PATH_MAX]; /* its name as of the last directory sync; "" if none */
	unsigned char *img;     /* content as of its last sync */
	size_t len;
	struct op *ops, **tail;
	bool dirsync; /* a journal/WAL the unix VFS created: its first sync syncs the directory */
};

struct cfile {
	sqlite3_file base;
	struct dfile *df; /* NULL for files without a name (temporary files) */
	sqlite3_file *real;
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct dfile *g_files;
static sqlite3_vfs *g_real;
static sqlite3_vfs g_vfs;
static long g_ops, g_io, g_cut_at, g_fail_at, g_fail_burst, g_failed;
static uint64_t g_rng;
static char g_copy_dir[PATH_MAX];
/* HF_CRASHVFS_FORGET_SYNCS=1: the model ignores syncs (a disk that lies): the tests must
 * then find acknowledged changes lost. Checks that the checks can fail. */
static bool g_forget_syncs;
/* cv_set_sync_delay_us: how long a sync sleeps before it syncs. */
static _Atomic long g_sync_delay_us;

static uint64_t rnd(void)
{
	uint64_t z = (g_rng += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static struct dfile *find_live(const char *path)
{
	for (struct dfile *f = g_files; f; f = f->next)
		if (f->live[0] && strcmp(f->live, path) == 0)
			return f;
	return NULL;
}

/* The directory was synced: every name now is durable. (One directory per test.) */
static void dir_synced_locked(void)
{
	for (struct dfile *f = g_files; f; f = f->next)
		snprintf(f->durable, sizeof f->durable, "%s", f->live);
}

static void grow(unsigned char **buf, size_t *len, size_t need)
{
	if (need <= *len)
		return;
	unsigned char *n = realloc(*buf, need);
	if (!n)
		_exit(90);
	memset(n + *len, 0, need - *len);
	*buf = n;
	*len = need;
}

/* Applies `op` to buf (all of it, or its first `keep` bytes). */
static void apply(unsigned char **buf, size_t *len, const struct op *op, size_t keep)
{
	if (!op->data) {
		if ((size_t)op->off < *len)
			*len = (size_t)op->off;
		return;
	}
	if (keep == 0)
		return;
	grow(buf, len, (size_t)op->off + keep);
	memcpy(*buf + op->off, op->data, keep);
}

static void free_ops(struct dfile *f)
{
	for (struct op *o = f->ops, *n; o; o = n) {
		n = o->next;
		free(o->data);
		free(o);
	}
	f->ops = NULL;
	f->tail = &f->ops;
}

static void write_copy(const char *name, const unsigned char *buf, size_t len)
{
	const char *base = strrchr(name, '/');
	char path[PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/%s", g_copy_dir, base ? base + 1 : name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		_exit(91);
	for (size_t o = 0; o < len;) {
		ssize_t w = write(fd, buf + o, len - o);
		if (w <= 0)
			_exit(92);
		o += (size_t)w;
	}
	close(fd);
}

/* The power cut: what a disk could hold now goes to the copy directory; the process ends
 * without closing anything. Called with g_lock held. */
static void cut_locked(void)
{
	for (struct dfile *f = g_files; f; f = f->next) {
		/* Which name survives: an unsynced rename or deletion may or may not have happened. */
		const char *name = f->durable[0] ? f->durable : NULL;
		if (strcmp(f->live, f->durable) != 0 && rnd() % 2)
			name = f->live[0] ? f->live : NULL;
		if (!name)
			continue;
		unsigned char *buf = NULL;
		size_t len = 0;
		grow(&buf, &len, f->len ? f->len : 1);
		len = f->len;
		if (f->len)
			memcpy(buf, f->img, f->len);
		for (struct op *o = f->ops; o; o = o->next) {
			uint64_t k = rnd() % 3; /* 0 lost, 1 kept, 2 torn */
			if (!o->data) {
				if (k)
					apply(&buf, &len, o, 0);
				continue;
			}
			size_t keep = k == 0 ? 0 : k == 1 ? o->len : 0;
			if (k == 2) {
				size_t sectors = (o->len + SECTOR - 1) / SECTOR;
				keep = (size_t)(rnd() % (sectors + 1)) * SECTOR;
				if (keep > o->len)
					keep = o->len;
			}
			apply(&buf, &len, o, keep);
		}
		write_copy(name, buf, len);
		free(buf);
	}
	_exit(0);
}

/* Counts an operation; cuts the power when its number has come. */
static void count_locked(void)
{
	if (++g_ops == g_cut_at)
		cut_locked();
}

/* True when this write or sync is to fail (the fault mode). */
static bool fail_now_locked(void)
{
	++g_io;
	if (g_fail_at > 0 && g_io >= g_fail_at && g_io < g_fail_at + g_fail_burst) {
		g_failed++;
		return true;
	}
	return false;
}

/* ---- the file methods ---- */

static int c_close(sqlite3_file *f)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xClose(c->real);
}

static int c_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xRead(c->real, buf, n, off);
}

static int c_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off)
{
	struct cfile *c = (struct cfile *)f;
	pthread_mutex_lock(&g_lock);
	count_locked();
	if (fail_now_locked()) {
		int rc = g_io % 2 ? SQLITE_IOERR_WRITE : SQLITE_FULL;
		pthread_mutex_unlock(&g_lock);
		return rc;
	}
	int rc = c->real->pMethods->xWrite(c->real, buf, n, off);
	if (rc == SQLITE_OK && c->df) {
		struct op *o = calloc(1, sizeof *o);
		if (!o || !(o->data = malloc((size_t)n)))
			_exit(93);
		memcpy(o->data, buf, (size_t)n);
		o->off = off;
		o->len = (size_t)n;
		*c->df->tail = o;
		c->df->tail = &o->next;
	}
	pthread_mutex_unlock(&g_lock);
	return rc;
}

static int c_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	struct cfile *c = (struct cfile *)f;
	pthread_mutex_lock(&g_lock);
	count_locked();
	int rc = c->real->pMethods->xTruncate(c->real, size);
	if (rc == SQLITE_OK && c->df) {
		struct op *o = calloc(1, sizeof *o);
		if (!o)
			_exit(93);
		o->off = size;
		*c->df->tail = o;
		c->df->tail = &o->next;
	}
	pthread_mutex_unlock(&g_lock);
	return rc;
}

/* The file was synced: every write to it so far is durable. */
static void file_synced_locked(struct dfile *d)
{
	if (!d || g_forget_syncs)
		return;
	for (struct op *o = d->ops; o; o = o->next)
		apply(&d->img, &d->len, o, o->len);
	free_ops(d);
	if (d->dirsync) {
		d->dirsync = false;
		dir_synced_locked();
	}
}

static int c_sync(sqlite3_file *f, int flags)
{
	struct cfile *c = (struct cfile *)f;
	long delay = g_sync_delay_us;
	if (delay > 0)
		usleep((useconds_t)delay); /* outside the lock: other callers' calls go on meanwhile */
	pthread_mutex_lock(&g_lock);
	count_locked();
	if (fail_now_locked()) {
		pthread_mutex_unlock(&g_lock);
		return SQLITE_IOERR_FSYNC;
	}
	int rc = c->real->pMethods->xSync(c->real, flags);
	if (rc == SQLITE_OK)
		file_synced_locked(c->df);
	pthread_mutex_unlock(&g_lock);
	return rc;
}

static int c_size(sqlite3_file *f, sqlite3_int64 *size)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xFileSize(c->real, size);
}

static int c_lock(sqlite3_file *f, int l)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xLock(c->real, l);
}

static int c_unlock(sqlite3_file *f, int l)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xUnlock(c->real, l);
}

static int c_reserved(sqlite3_file *f, int *out)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xCheckReservedLock(c->real, out);
}

static int c_fcntl(sqlite3_file *f, int op, void *arg)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xFileControl(c->real, op, arg);
}

static int c_sector(sqlite3_file *f)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xSectorSize(c->real);
}

static int c_devchar(sqlite3_file *f)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xDeviceCharacteristics(c->real);
}

static int c_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xShmMap(c->real, pg, pgsz, extend, pp);
}

static int c_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xShmLock(c->real, offset, n, flags);
}

static void c_shm_barrier(sqlite3_file *f)
{
	struct cfile *c = (struct cfile *)f;
	c->real->pMethods->xShmBarrier(c->real);
}

static int c_shm_unmap(sqlite3_file *f, int del)
{
	struct cfile *c = (struct cfile *)f;
	return c->real->pMethods->xShmUnmap(c->real, del);
}

/* No memory-mapped I/O: every read goes through xRead. */
static int c_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp)
{
	(void)f, (void)off, (void)n;
	*pp = NULL;
	return SQLITE_OK;
}

static int c_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	(void)f, (void)off, (void)p;
	return SQLITE_OK;
}

static const sqlite3_io_methods c_methods = {
    3,          c_close,   c_read,     c_write,     c_truncate,    c_sync,
    c_size,     c_lock,    c_unlock,   c_reserved,  c_fcntl,       c_sector,
    c_devchar,  c_shm_map, c_shm_lock, c_shm_barrier, c_shm_unmap, c_fetch,
    c_unfetch,
};

/* Reads a whole existing file (a file that exists when first opened counts as durable). */
static void read_whole(const char *path, struct dfile *d)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return;
	unsigned char chunk[65536];
	ssize_t r;
	while ((r = read(fd, chunk, sizeof chunk)) > 0) {
		size_t at = d->len;
		grow(&d->img, &d->len, at + (size_t)r);
		memcpy(d->img + at, chunk, (size_t)r);
	}
	close(fd);
}

static int v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
	(void)vfs;
	struct cfile *c = (struct cfile *)f;
	memset(c, 0, sizeof *c);
	c->real = (sqlite3_file *)(c + 1);
	struct dfile *d = NULL;
	bool created = false;
	pthread_mutex_lock(&g_lock);
	if (name && !(d = find_live(name))) {
		created = true;
		d = calloc(1, sizeof *d);
		if (!d)
			_exit(93);
		snprintf(d->live, sizeof d->live, "%s", name);
		d->tail = &d->ops;
		if (access(name, F_OK) == 0) {
			snprintf(d->durable, sizeof d->durable, "%s", name);
			read_whole(name, d);
		} else if (flags & (SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL |
		                    SQLITE_OPEN_SUPER_JOURNAL)) {
			d->dirsync = true;
		}
		d->next = g_files;
		g_files = d;
	}
	pthread_mutex_unlock(&g_lock);
	int rc = g_real->xOpen(g_real, name, c->real, flags, out);
	if (rc != SQLITE_OK) {
		c->base.pMethods = NULL;
		if (created) { /* no file was made: forget it */
			pthread_mutex_lock(&g_lock);
			for (struct dfile **p = &g_files; *p; p = &(*p)->next)
				if (*p == d) {
					*p = d->next;
					break;
				}
			pthread_mutex_unlock(&g_lock);
			free(d->img);
			free(d);
		}
		return rc;
	}
	c->df = d;
	c->base.pMethods = &c_methods;
	return SQLITE_OK;
}

static int v_delete(sqlite3_vfs *vfs, const char *name, int dirsync)
{
	(void)vfs;
	pthread_mutex_lock(&g_lock);
	count_locked();
	int rc = g_real->xDelete(g_real, name, dirsync);
	struct dfile *d = find_live(name);
	if (rc == SQLITE_OK && d) {
		d->live[0] = '\0';
		if (dirsync)
			dir_synced_locked();
	}
	pthread_mutex_unlock(&g_lock);
	return rc;
}

static int v_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	(void)vfs;
	return g_real->xAccess(g_real, name, flags, out);
}

static int v_fullpath(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	(void)vfs;
	return g_real->xFullPathname(g_real, name, n, out);
}

static void *v_dlopen(sqlite3_vfs *vfs, const char *name)
{
	(void)vfs;
	return g_real->xDlOpen(g_real, name);
}

static void v_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
	(void)vfs;
	g_real->xDlError(g_real, n, msg);
}

static void (*v_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	(void)vfs;
	return g_real->xDlSym(g_real, h, sym);
}

static void v_dlclose(sqlite3_vfs *vfs, void *h)
{
	(void)vfs;
	g_real->xDlClose(g_real, h);
}

static int v_random(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return g_real->xRandomness(g_real, n, out);
}

static int v_sleep(sqlite3_vfs *vfs, int us)
{
	(void)vfs;
	return g_real->xSleep(g_real, us);
}

static int v_time(sqlite3_vfs *vfs, double *out)
{
	(void)vfs;
	return g_real->xCurrentTime(g_real, out);
}

static int v_lasterr(sqlite3_vfs *vfs, int n, char *out)
{
	(void)vfs;
	return g_real->xGetLastError(g_real, n, out);
}

static int v_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	(void)vfs;
	return g_real->xCurrentTimeInt64(g_real, out);
}

int cv_register(void)
{
	if (g_real)
		return SQLITE_OK;
	g_forget_syncs = getenv("HF_CRASHVFS_FORGET_SYNCS") != NULL;
	g_real = sqlite3_vfs_find("unix");
	if (!g_real)
		return SQLITE_ERROR;
	g_vfs = (sqlite3_vfs){
	    .iVersion = 2,
	    .szOsFile = (int)sizeof(struct cfile) + g_real->szOsFile,
	    .mxPathname = g_real->mxPathname,
	    .zName = "crashvfs",
	    .xOpen = v_open,
	    .xDelete = v_delete,
	    .xAccess = v_access,
	    .xFullPathname = v_fullpath,
	    .xDlOpen = v_dlopen,
	    .xDlError = v_dlerror,
	    .xDlSym = v_dlsym,
	    .xDlClose = v_dlclose,
	    .xRandomness = v_random,
	    .xSleep = v_sleep,
	    .xCurrentTime = v_time,
	    .xGetLastError = v_lasterr,
	    .xCurrentTimeInt64 = v_time64,
	};
	return sqlite3_vfs_register(&g_vfs, 1);
}

void cv_set_cut(long n, uint64_t seed, const char *copy_dir)
{
	pthread_mutex_lock(&g_lock);
	g_ops = 0;
	g_cut_at = n;
	g_rng = seed;
	snprintf(g_copy_dir, sizeof g_copy_dir, "%s", copy_dir ? copy_dir : "");
	pthread_mutex_unlock(&g_lock);
}

void cv_cut_now(void)
{
	pthread_mutex_lock(&g_lock);
	cut_locked();
}

void cv_set_fail(long n, long burst)
{
	pthread_mutex_lock(&g_lock);
	g_ops = g_io = 0;
	g_fail_at = n;
	g_fail_burst = burst;
	g_failed = 0;
	pthread_mutex_unlock(&g_lock);
}

void cv_set_sync_delay_us(long us)
{
	g_sync_delay_us = us;
}

long cv_ops(void)
{
	pthread_mutex_lock(&g_lock);
	long n = g_ops;
	pthread_mutex_unlock(&g_lock);
	return n;
}

long cv_failed(void)
{
	pthread_mutex_lock(&g_lock);
	long n = g_failed;
	pthread_mutex_unlock(&g_lock);
	return n;
}

/* ---- the engine's own file-system calls (linked with -Wl,--wrap=rename,...) ---- */

int __real_rename(const char *from, const char *to);
int __real_unlink(const char *path);
int __real_fsync(int fd);
int __wrap_rename(const char *from, const char *to);
int __wrap_unlink(const char *path);
int __wrap_fsync(int fd);

int __wrap_rename(const char *from, const char *to)
{
	pthread_mutex_lock(&g_lock);
	count_locked();
	int rc = __real_rename(from, to);
	if (rc == 0) {
		char full_from[PATH_MAX], full_to[PATH_MAX];
		/* SQLite names files by their full path: compare in that form. */
		if (g_real && g_real->xFullPathname(g_real, from, PATH_MAX, full_from) == SQLITE_OK &&
		    g_real->xFullPathname(g_real, to, PATH_MAX, full_to) == SQLITE_OK) {
			struct dfile *old = find_live(full_to), *d = find_live(full_from);
			if (old)
				old->live[0] = '\0';
			if (d)
				snprintf(d->live, sizeof d->live, "%s", full_to);
		}
	}
	pthread_mutex_unlock(&g_lock);
	return rc;
}

int __wrap_unlink(const char *path)
{
	pthread_mutex_lock(&g_lock);
	int rc = __real_unlink(path);
	char full[PATH_MAX];
	if (rc == 0 && g_real && g_real->xFullPathname(g_real, path, PATH_MAX, full) == SQLITE_OK) {
		struct dfile *d = find_live(full);
		if (d)
			d->live[0] = '\0';
	}
	pthread_mutex_unlock(&g_lock);
	return rc;
}

int __wrap_fsync(int fd)
{
	int rc = __real_fsync(fd);
	struct stat sb;
	if (rc == 0 && fstat(fd, &sb) == 0 && S_ISDIR(sb.st_mode)) {
		pthread_mutex_lock(&g_lock);
		count_locked();
		dir_synced_locked();
		pthread_mutex_unlock(&g_lock);
	}
	return rc;
}
