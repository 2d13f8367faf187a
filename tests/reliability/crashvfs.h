/*
 * crashvfs.h — a test SQLite VFS over the unix one that models power loss and I/O errors:
 * it remembers, per file, the content as of the last xSync (the "durable image") and the
 * writes made since, and can cut the power after the N-th write or sync (writing what a disk
 * could hold after the cut to a directory), or fail the N-th write or sync.
 */
#ifndef HF_CRASHVFS_H
#define HF_CRASHVFS_H

#include <stdint.h>

/* Registers the VFS as the process's default (before any hf_open). 0 or an SQLite code. */
int cv_register(void);

/* Power loss: at the n-th write/sync/rename counted from now (n >= 1), the process writes the
 * image of every file a disk could hold after a power cut at that moment into `copy_dir`
 * (unsynced writes dropped, kept or torn at 512-byte sectors, unsynced names lost; choices
 * drawn from `seed`) and _exit(0)s. n = 0: never. */
void cv_set_cut(long n, uint64_t seed, const char *copy_dir);

/* Cuts the power now (as cv_set_cut's n-th operation would); does not return. */
void cv_cut_now(void);

/* I/O errors: writes and syncs number n .. n+burst-1 (counted from now) fail, writes
 * alternately with SQLITE_IOERR_WRITE and SQLITE_FULL, syncs with SQLITE_IOERR_FSYNC.
 * n = 0: none. */
void cv_set_fail(long n, long burst);

/* Every sync sleeps `us` microseconds before it syncs, as a real disk's flush takes time:
 * concurrent callers' calls then gather behind a commit's fsync (the engine's group commit)
 * instead of each finding the writer idle, as on tmpfs. 0 (default): none. */
void cv_set_sync_delay_us(long us);

/* Writes, syncs and renames counted since the last cv_set_cut / cv_set_fail. */
long cv_ops(void);
/* Operations failed since the last cv_set_fail. */
long cv_failed(void);

#endif /* HF_CRASHVFS_H */
