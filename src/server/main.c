/*
 * main.c — holdfastd's entry point: the option table (arguments, HOLDFAST_* environment,
 * --config file), opening the store, the event loop, signals, and the orderly shutdown
 * (SIGTERM/SIGINT: drain, make the journal durable, exit 0).
 */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "server/server.h"

#define DEFAULT_LISTEN "127.0.0.1:7070"
#define DEFAULT_ENGINE "file:./var/holdfast.db"

/* ---- The option table: one row per option, shared by all three sources. ------------ */

struct option_row {
	const char *name; /* --name; config key "name"; env HOLDFAST_NAME (dashes as _) */
	const char *arg;  /* what the value is, for --help; NULL: takes no value */
	int (*set)(struct hf__config *cfg, const char *value, char *why, size_t n);
	const char *help;
};

static int set_str(char **dst, const char *v)
{
	char *s = strdup(v);
	if (!s)
		return -1;
	free(*dst);
	*dst = s;
	return 0;
}

static int set_int(int64_t *dst, const char *v, int64_t lo, int64_t hi, char *why, size_t n)
{
	char *end;
	errno = 0;
	long long x = strtoll(v, &end, 10);
	if (!*v || *end || errno || x < lo || x > hi) {
		snprintf(why, n, "'%s' is not a whole number from %lld to %lld", v, (long long)lo,
		         (long long)hi);
		return -1;
	}
	*dst = x;
	return 0;
}

static int add_key(struct hf__config *cfg, const char *key, char *why, size_t n)
{
	size_t len = strlen(key);
	while (len && (key[len - 1] == ' ' || key[len - 1] == '\r'))
		len--;
	while (len && *key == ' ') {
		key++;
		len--;
	}
	if (len == 0)
		return 0; /* blank lines in a key file */
	if (len < 16) {
		snprintf(why, n, "an API key must be at least 16 characters");
		return -1;
	}
	char **keys = realloc(cfg->api_keys, (cfg->n_api_keys + 1) * sizeof(*keys));
	if (!keys)
		return -1;
	cfg->api_keys = keys;
	keys[cfg->n_api_keys] = strndup(key, len);
	if (!keys[cfg->n_api_keys])
		return -1;
	cfg->n_api_keys++;
	return 0;
}

static int o_listen(struct hf__config *c, const char *v, char *w, size_t n)
{
	(void)w;
	(void)n;
	return set_str(&c->listen, v);
}

static int o_engine(struct hf__config *c, const char *v, char *w, size_t n)
{
	(void)w;
	(void)n;
	return set_str(&c->engine, v);
}

static int o_fallback_engine(struct hf__config *c, const char *v, char *w, size_t n)
{
	(void)w;
	(void)n;
	return set_str(&c->fallback_engine, v);
}

static int o_api_key(struct hf__config *c, const char *v, char *w, size_t n)
{
	/* A comma-separated list, so that one env var or config line can carry several. */
	char *copy = strdup(v), *save = NULL;
	int rc = copy ? 0 : -1;
	for (char *k = copy ? strtok_r(copy, ",", &save) : NULL; k && rc == 0;
	     k = strtok_r(NULL, ",", &save))
		rc = add_key(c, k, w, n);
	free(copy);
	return rc;
}

static int o_api_key_file(struct hf__config *c, const char *v, char *w, size_t n)
{
	FILE *f = fopen(v, "r");
	char line[1024];
	int rc = 0;
	if (!f) {
		snprintf(w, n, "cannot read API key file '%s': %s", v, strerror(errno));
		return -1;
	}
	while (rc == 0 && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (line[0] != '#')
			rc = add_key(c, line, w, n);
	}
	fclose(f);
	return rc;
}

static int o_tls_cert(struct hf__config *c, const char *v, char *w, size_t n)
{
	(void)w;
	(void)n;
	return set_str(&c->tls_cert, v);
}

static int o_tls_key(struct hf__config *c, const char *v, char *w, size_t n)
{
	(void)w;
	(void)n;
	return set_str(&c->tls_key, v);
}

static int o_max_body(struct hf__config *c, const char *v, char *w, size_t n)
{
	return set_int(&c->max_body, v, 1024, 256LL << 20, w, n);
}

static int o_max_headers(struct hf__config *c, const char *v, char *w, size_t n)
{
	return set_int(&c->max_headers, v, 1024, 1 << 20, w, n);
}

static int o_timeout(struct hf__config *c, const char *v, char *w, size_t n)
{
	return set_int(&c->timeout_s, v, 1, 86400, w, n);
}

static int o_max_conns(struct hf__config *c, const char *v, char *w, size_t n)
{
	return set_int(&c->max_conns, v, 1, 1000000, w, n);
}

static int o_max_waiters(struct hf__config *c, const char *v, char *w, size_t n)
{
	return set_int(&c->max_waiters, v, 1, 10000000, w, n);
}

static int o_max_holds(struct hf__config *c, const char *v, char *w, size_t n)
{
	return set_int(&c->max_holds, v, 1, 100000000, w, n);
}

static int o_max_resources(struct hf__config *c, const char *v, char *w, size_t n)
{
	return set_int(&c->max_resources, v, 1, 100000000, w, n);
}

static int o_drain(struct hf__config *c, const char *v, char *w, size_t n)
{
	return set_int(&c->drain_s, v, 0, 3600, w, n);
}

static int o_events_keep_count(struct hf__config *c, const char *v, char *w, size_t n)
{
	return set_int(&c->events_keep_count, v, 1, INT64_MAX, w, n);
}

static int o_events_keep_ms(struct hf__config *c, const char *v, char *w, size_t n)
{
	return set_int(&c->events_keep_ms, v, 1, INT64_MAX, w, n);
}

static int o_events_trim_force(struct hf__config *c, const char *v, char *w, size_t n)
{
	return set_int(&c->events_trim_force, v, 0, 1, w, n);
}

static int o_log_level(struct hf__config *c, const char *v, char *w, size_t n)
{
	int l = hf__log_level_parse(v);
	if (l < 0) {
		snprintf(w, n, "'%s' is not debug, info, warn or error", v);
		return -1;
	}
	c->log_level = l;
	return 0;
}

static const struct option_row options[] = {
	{"listen", "HOST:PORT", o_listen,
	 "address to serve on (default " DEFAULT_LISTEN "; port 0 picks a free port)"},
	{"engine", "URL", o_engine, "store to serve (default " DEFAULT_ENGINE "; ./var is created)"},
	/* Off by default: it trades safety for availability (docs/api.md, "Fallback engine"). */
	{"fallback-engine", "URL", o_fallback_engine,
	 "off by default; used only while --engine is unreachable. RISK: split brain (a cut-off "
	 "primary may grant the same lock too); its fences start at 2^48 (docs/api.md)"},
	{"config", "FILE", NULL, "read options from FILE: lines 'name = value', '#' comments"},
	{"api-key", "KEY", o_api_key,
	 "require 'Authorization: Bearer KEY' (16+ chars; repeat or comma-separate for several)"},
	{"api-key-file", "FILE", o_api_key_file, "accepted API keys, one per line"},
	{"tls-cert", "FILE", o_tls_cert, "serve HTTPS with this PEM certificate chain"},
	{"tls-key", "FILE", o_tls_key, "the PEM private key of --tls-cert"},
	{"max-body", "BYTES", o_max_body, "largest request body (default 1048576): 413 above"},
	{"max-headers", "BYTES", o_max_headers, "largest request header block (default 16384)"},
	{"timeout", "SECONDS", o_timeout,
	 "a whole request (headers+body), idle keep-alive, slow write, a stalled event stream "
	 "(default 30; parked waits are not cut by it)"},
	{"max-connections", "N", o_max_conns,
	 "open connections (default 16384): 429 limit_exceeded above; those without a valid key "
	 "or request yet get at most half"},
	{"max-waiters", "N", o_max_waiters,
	 "parked acquires at once, and apart from them event long-polls/streams (default 100000)"},
	{"max-holds", "N", o_max_holds,
	 "live holds in the store at once (default 1000000): 429 limit_exceeded above"},
	{"max-resources", "N", o_max_resources,
	 "resources in the store at once, implicit ones included (default 1000000)"},
	{"drain-timeout", "SECONDS", o_drain,
	 "on SIGTERM, how long to finish what is in flight (default 10)"},
	{"events-keep-count", "N", o_events_keep_count,
	 "keep about the newest N events (trimmed when 25% over; default all)"},
	{"events-keep-ms", "MS", o_events_keep_ms,
	 "trim events older than MS (default: never)"},
	{"events-trim-force", "0|1", o_events_trim_force,
	 "1: let retention trim past relay/projection checkpoints (logged); default 0"},
	{"log-level", "LEVEL", o_log_level, "debug, info (default), warn or error"},
	{"help", NULL, NULL, "show this help and exit"},
	{"version", NULL, NULL, "show the version and exit"},
};

#define N_OPTIONS (sizeof(options) / sizeof(options[0]))

static const struct option_row *find_option(const char *name, size_t len)
{
	for (size_t i = 0; i < N_OPTIONS; i++) {
		const char *o = options[i].name;
		if (strlen(o) != len)
			continue;
		bool same = true;
		for (size_t k = 0; k < len && same; k++) /* config keys may use _ for - */
			same = o[k] == name[k] || (o[k] == '-' && name[k] == '_');
		if (same)
			return &options[i];
	}
	return NULL;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: holdfastd [OPTION...]\n\n"
	           "The holdfast server: holds, locks and semaphores over HTTP/JSON (docs/api.md).\n\n"
	           "Options (each also as env HOLDFAST_NAME, e.g. HOLDFAST_LISTEN, and as a\n"
	           "config-file key; arguments beat env, env beats the config file):\n");
	for (size_t i = 0; i < N_OPTIONS; i++) {
		char left[64];
		snprintf(left, sizeof(left), "--%s%s%s", options[i].name, options[i].arg ? " " : "",
		         options[i].arg ? options[i].arg : "");
		fprintf(f, "  %-28s %s\n", left, options[i].help);
	}
	fprintf(f, "\nSignals: SIGTERM or SIGINT stop accepting, answer what is in flight (parked\n"
	           "waits get 503 shutting_down), make the journal durable and exit 0. One that\n"
	           "comes during start-up is held until the server is up, then honoured the same way.\n");
}

static int apply(struct hf__config *cfg, const struct option_row *o, const char *value,
                 const char *source)
{
	char why[256] = "out of memory";
	if (!o->set)
		return 0; /* config, help, version: handled before */
	if (o->set(cfg, value, why, sizeof(why)) != 0) {
		fprintf(stderr, "holdfastd: %s: --%s: %s\n", source, o->name, why);
		return -1;
	}
	return 0;
}

static int read_config(struct hf__config *cfg, const char *path)
{
	FILE *f = fopen(path, "r");
	char line[4096];
	int lineno = 0, rc = 0;
	if (!f) {
		fprintf(stderr, "holdfastd: cannot read config '%s': %s\n", path, strerror(errno));
		return -1;
	}
	while (rc == 0 && fgets(line, sizeof(line), f)) {
		lineno++;
		char *p = line + strspn(line, " \t");
		p[strcspn(p, "\r\n")] = '\0';
		if (!*p || *p == '#')
			continue;
		char *eq = strchr(p, '=');
		if (!eq) {
			fprintf(stderr, "holdfastd: %s:%d: expected 'name = value'\n", path, lineno);
			rc = -1;
			break;
		}
		char *end = eq;
		while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		char *value = eq + 1 + strspn(eq + 1, " \t");
		size_t vl = strlen(value);
		while (vl && (value[vl - 1] == ' ' || value[vl - 1] == '\t'))
			value[--vl] = '\0';
		const struct option_row *o = find_option(p, (size_t)(end - p));
		if (!o || !o->arg || !o->set) {
			fprintf(stderr, "holdfastd: %s:%d: unknown option '%.*s'\n", path, lineno,
			        (int)(end - p), p);
			rc = -1;
			break;
		}
		char src[PATH_MAX + 16];
		snprintf(src, sizeof(src), "%s:%d", path, lineno);
		rc = apply(cfg, o, value, src);
	}
	fclose(f);
	return rc;
}

static void config_free(struct hf__config *cfg)
{
	free(cfg->listen);
	free(cfg->engine);
	free(cfg->fallback_engine);
	free(cfg->tls_cert);
	free(cfg->tls_key);
	for (size_t i = 0; i < cfg->n_api_keys; i++)
		free(cfg->api_keys[i]);
	free(cfg->api_keys);
}

/* Defaults, then the config file, the environment, the arguments. 0: go on; 1: exit 0
 * (help, version); -1: exit 2. */
static int configure(struct hf__config *cfg, int argc, char **argv)
{
	const char *config = getenv("HOLDFAST_CONFIG");
	cfg->max_body = 1 << 20;
	cfg->max_headers = 16384;
	cfg->timeout_s = 30;
	cfg->max_conns = 16384;
	cfg->max_waiters = 100000;
	cfg->max_holds = 1000000; /* hf_options_init's */
	cfg->max_resources = 1000000;
	cfg->drain_s = 10;
	cfg->log_level = HF__LOG_INFO;
	if (set_str(&cfg->listen, DEFAULT_LISTEN) || set_str(&cfg->engine, DEFAULT_ENGINE))
		return -1;
	/* First pass: --help, --version, --config and the shape of every argument. */
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strncmp(a, "--", 2) != 0) {
			fprintf(stderr, "holdfastd: unexpected argument '%s' (try --help)\n", a);
			return -1;
		}
		const char *eq = strchr(a + 2, '=');
		size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
		const struct option_row *o = find_option(a + 2, len);
		if (!o) {
			fprintf(stderr, "holdfastd: unknown option '%s' (try --help)\n", a);
			return -1;
		}
		if (!o->arg) {
			if (strcmp(o->name, "help") == 0)
				usage(stdout);
			else
				printf("holdfastd %s\n", HF_VERSION);
			return 1;
		}
		if (!eq && i + 1 >= argc) {
			fprintf(stderr, "holdfastd: --%s needs a value\n", o->name);
			return -1;
		}
		const char *v = eq ? eq + 1 : argv[++i];
		if (strcmp(o->name, "config") == 0)
			config = v;
	}
	if (config && read_config(cfg, config) != 0)
		return -1;
	for (size_t k = 0; k < N_OPTIONS; k++) {
		char env[64] = "HOLDFAST_";
		size_t n = strlen(env);
		for (const char *p = options[k].name; *p && n < sizeof(env) - 1; p++)
			env[n++] = *p == '-' ? '_' : (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
		env[n] = '\0';
		const char *v = getenv(env);
		if (v && options[k].arg && apply(cfg, &options[k], v, env) != 0)
			return -1;
	}
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		const char *eq = strchr(a + 2, '=');
		size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
		const struct option_row *o = find_option(a + 2, len);
		const char *v = eq ? eq + 1 : argv[++i];
		if (apply(cfg, o, v, "argument") != 0)
			return -1;
	}
	if (!cfg->tls_cert != !cfg->tls_key) {
		fprintf(stderr, "holdfastd: --tls-cert and --tls-key go together\n");
		return -1;
	}
	return 0;
}

/* ---- Running. --------------------------------------------------------------------- */

static void on_store(evutil_socket_t fd, short what, void *arg)
{
	struct hf__server *srv = arg;
	(void)fd;
	(void)what;
	/* The batch ends before the answers go out: the writer commits it while they are sent,
	 * instead of waiting for them. */
	hf__srv_batch_end(srv);
	hf_store_dispatch(srv->store);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct hf__server *srv = arg;
	(void)what;
	hf__log(HF__LOG_LIFE, "signal", " signal=%s", sig == SIGTERM ? "TERM" : "INT");
	hf__http_drain(srv);
}

/* 10,000 parked clients need 10,000 descriptors: take what the hard limit allows. */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		hf__log(HF__LOG_DEBUG, "fd_limit", " nofile=%llu", (unsigned long long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
	struct hf__config cfg = {0};
	struct hf__server srv = {0};
	struct event *sig_term = NULL, *sig_int = NULL;
	hf_error err = {0};
	int status = 2;
	sigset_t stop_sigs, old_mask;

	/* From the very first line until the loop's signal events are in place, SIGTERM and
	 * SIGINT stay pending instead of killing the process half-started (the store open, the
	 * engine threads, which inherit the mask). Unblocked once the handlers are installed: a
	 * signal that came during start-up is then delivered to them, and we drain and exit 0. */
	sigemptyset(&stop_sigs);
	sigaddset(&stop_sigs, SIGTERM);
	sigaddset(&stop_sigs, SIGINT);
	sigprocmask(SIG_BLOCK, &stop_sigs, &old_mask);

	int c = configure(&cfg, argc, argv);
	if (c != 0) {
		config_free(&cfg);
		return c > 0 ? 0 : 2;
	}
	hf__log_set_level(cfg.log_level);
	signal(SIGPIPE, SIG_IGN); /* a client gone mid-write is an error return, not a death */
	raise_fd_limit();
	srv.cfg = &cfg;
	srv.started_ms = hf_now_ms();
	status = 1;

	if (strcmp(cfg.engine, DEFAULT_ENGINE) == 0 && mkdir("var", 0755) != 0 && errno != EEXIST) {
		hf__log(HF__LOG_ERROR, "mkdir_failed", " path=var error=\"%s\"", strerror(errno));
		goto out_config;
	}
	hf_options opt;
	hf_options_init(&opt);
	opt.max_waiters = (size_t)cfg.max_waiters;
	opt.max_holds = (size_t)cfg.max_holds;
	opt.max_resources = (size_t)cfg.max_resources;
	opt.fallback_url = cfg.fallback_engine;
	opt.events_keep_count = cfg.events_keep_count;
	opt.events_keep_ms = cfg.events_keep_ms;
	opt.events_trim_force = cfg.events_trim_force == 1;
	if (hf_open(cfg.engine, &opt, &srv.store, &err) != HF_OK) {
		char m[300], e[300];
		hf__log(HF__LOG_ERROR, "open_failed", " engine=%s code=%s message=%s",
		        hf__log_quote(e, sizeof(e), cfg.engine), hf_err_name(err.code),
		        hf__log_quote(m, sizeof(m), err.message));
		goto out_config;
	}
	srv.base = event_base_new();
	if (!srv.base)
		goto out_store;
	srv.store_ev = event_new(srv.base, hf_store_fd(srv.store), EV_READ | EV_PERSIST, on_store,
	                         &srv);
	sig_term = evsignal_new(srv.base, SIGTERM, on_signal, &srv);
	sig_int = evsignal_new(srv.base, SIGINT, on_signal, &srv);
	if (!srv.store_ev || !sig_term || !sig_int || event_add(srv.store_ev, NULL) != 0 ||
	    event_add(sig_term, NULL) != 0 || event_add(sig_int, NULL) != 0 ||
	    hf__stats_start(&srv) != HF_OK)
		goto out_loop;
	if (hf__http_start(&srv, &err) != HF_OK) {
		char m[300];
		hf__log(HF__LOG_ERROR, "listen_failed", " message=%s",
		        hf__log_quote(m, sizeof(m), err.message));
		goto out_loop;
	}
	sigprocmask(SIG_SETMASK, &old_mask, NULL); /* a pending TERM/INT is handled now */
	{
		char e[300];
		hf__log(HF__LOG_LIFE, "started", " version=%s engine=%s pid=%d", HF_VERSION,
		        hf__log_quote(e, sizeof(e), cfg.engine), (int)getpid());
	}
	event_base_dispatch(srv.base);
	status = 0;
out_loop:
	hf__log(HF__LOG_LIFE, "stopping", " requests=%zu", srv.n_rqs);
	/* Closing the store first makes every acknowledged change durable and drops the
	 * completions nobody will read; then the leftover requests are freed. */
	hf__srv_batch_end(&srv);
	hf_close(srv.store);
	srv.store = NULL;
	hf__http_stop(&srv);
	hf__stats_free(&srv);
	if (sig_term)
		event_free(sig_term);
	if (sig_int)
		event_free(sig_int);
	if (srv.store_ev)
		event_free(srv.store_ev);
	if (srv.base)
		event_base_free(srv.base);
	hf__log(HF__LOG_LIFE, "stopped", " status=%d", status);
	goto out_config;
out_store:
	hf_close(srv.store);
out_config:
	config_free(&cfg);
	return status;
}
