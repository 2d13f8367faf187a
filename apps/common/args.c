/*
 * args.c — the apps' command lines as tables: each option names its kind (text, HOST:PORT,
 * a number in a range, a flag) and where its value goes; one parser for them all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"

/* The option of opts[] called `name` ("--name"), or NULL. */
static const struct app_opt *find(const struct app_opt *opts, const char *name, size_t len)
{
	for (const struct app_opt *o = opts; o->name; o++)
		if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
			return o;
	return NULL;
}

static bool set(const char *prog, const struct app_opt *o, const char *v)
{
	char opt[64];
	snprintf(opt, sizeof(opt), "--%s", o->name);
	double d;
	switch (o->kind) {
	case APP_OPT_TEXT:
		*(const char **)o->text = v;
		return true;
	case APP_OPT_HOSTPORT:
		if (!app_parse_hostport(v, o->text, o->port) || (*o->port == 0 && o->lo > 0)) {
			fprintf(stderr, "%s: %s wants HOST:PORT, not '%s'\n", prog, opt, v);
			return false;
		}
		return true;
	case APP_OPT_INT:
		if (!app_parse_num(prog, opt, v, o->lo, o->hi, &d))
			return false;
		*o->num = (int64_t)d;
		return true;
	case APP_OPT_REAL:
		return app_parse_num(prog, opt, v, o->lo, o->hi, o->real);
	case APP_OPT_FLAG:
		break;
	}
	return false;
}

int app_args(const char *prog, const char *usage, const struct app_opt *opts, int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--help") == 0) {
			fputs(usage, stdout);
			return 0;
		}
		const char *eq = strchr(a, '=');
		size_t len = eq ? (size_t)(eq - a - 2) : strlen(a) - 2;
		const struct app_opt *o = strncmp(a, "--", 2) == 0 ? find(opts, a + 2, len) : NULL;
		if (!o) {
			fprintf(stderr, "%s: unknown argument '%s'\n%s", prog, a, usage);
			return 2;
		}
		if (o->kind == APP_OPT_FLAG) {
			*o->flag = true;
			continue;
		}
		const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
		if (!v) {
			fprintf(stderr, "%s: --%s wants a value\n", prog, o->name);
			return 2;
		}
		if (!set(prog, o, v))
			return 2;
	}
	for (const struct app_opt *o = opts; o->name; o++)
		if (o->required && o->kind == APP_OPT_TEXT && !*(const char **)o->text) {
			fprintf(stderr, "%s: --%s is required\n%s", prog, o->name, usage);
			return 2;
		}
	return -1;
}
