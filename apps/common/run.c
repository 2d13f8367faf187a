/*
 * run.c — an app's life from main(): the holdfast store, one context per worker thread, the
 * app's start-up steps, the HTTP front with the app's route table (plus GET /health), and the
 * teardown in reverse, so that each app's main() only reads its command line.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

static const struct app_def *def; /* the running app; set once before any worker starts */

static void route(void *ctx, const struct app_request *req, struct app_reply *r)
{
	if (strcmp(req->path, "/health") == 0 && strcmp(req->method, "GET") == 0) {
		app_ok(r, 200,
		       json_pack("{s:s,s:s,s:s}", "status", "ok", "app", def->name, "holdfast",
		                 hf_store_scheme(*def->store)));
		return;
	}
	app_route(def->routes, def->n_routes, ctx, req, r);
}

int app_run(const struct app_def *d)
{
	int rc = 1, opened = 0;
	char err[512] = "";
	bool started = false;
	def = d;
	char *ctxs = calloc((size_t)d->workers, d->ctx_size);
	if (!ctxs || !app_store_open(d->prog, d->holdfast_url, d->store))
		goto out;
	for (; opened < d->workers; opened++)
		if (!d->open(ctxs + (size_t)opened * d->ctx_size, err, sizeof(err))) {
			opened++; /* closed below, as far as it got */
			goto out_err;
		}
	if (!app_pg_schema(((struct app_pg *)(ctxs + d->pg_offset))->conn, d->schema_lock,
	                   d->schema, err, sizeof(err)) ||
	    !d->start(ctxs, err, sizeof(err)))
		goto out_err;
	started = true;
	struct app_server srv = {.name = d->name,
	                         .host = d->listen_host,
	                         .port = d->listen_port,
	                         .engine_url = d->holdfast_url,
	                         .ctxs = ctxs,
	                         .ctx_size = d->ctx_size,
	                         .n = d->workers,
	                         .route = route};
	rc = app_serve(&srv);
	goto out;
out_err:
	fprintf(stderr, "%s: %s\n", d->prog, err);
out:
	if (started && d->stop)
		d->stop();
	for (int i = 0; i < opened; i++)
		d->close(ctxs + (size_t)i * d->ctx_size);
	free(ctxs);
	if (*d->store) {
		hf_close(*d->store);
		*d->store = NULL;
	}
	return rc;
}
