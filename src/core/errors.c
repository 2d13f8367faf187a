/*
 * errors.c — the one error table (HF_ERROR_MAP) turned into names, messages and HTTP
 * statuses, and error values with specific messages.
 */
#include <stdio.h>
#include <string.h>

#include "core/core.h"

struct error_row {
	int code;
	int status;
	const char *name;
	const char *message;
};

static const struct error_row error_rows[] = {
	{HF_OK, 200, "ok", "success"},
#define HF__ERROR_ROW(name, value, status, code, message) {(value), (status), (code), (message)},
	HF_ERROR_MAP(HF__ERROR_ROW)
#undef HF__ERROR_ROW
};

static const struct error_row *find_row(int code)
{
	for (size_t i = 0; i < sizeof(error_rows) / sizeof(error_rows[0]); i++)
		if (error_rows[i].code == code)
			return &error_rows[i];
	return NULL;
}

const char *hf_err_name(int code)
{
	const struct error_row *row = find_row(code);
	return row ? row->name : "internal_error";
}

const char *hf_strerror(int code)
{
	const struct error_row *row = find_row(code);
	return row ? row->message : "unknown error";
}

int hf_err_http_status(int code)
{
	const struct error_row *row = find_row(code);
	return row ? row->status : 500;
}

int hf_err_from_name(const char *name)
{
	if (!name)
		return HF_EINTERNAL;
	for (size_t i = 0; i < sizeof(error_rows) / sizeof(error_rows[0]); i++)
		if (strcmp(error_rows[i].name, name) == 0)
			return error_rows[i].code;
	return HF_EINTERNAL;
}

int hf__err(hf_error *err, int code, const char *fmt, ...)
{
	if (err) {
		va_list ap;
		va_start(ap, fmt);
		err->code = code;
		int n = vsnprintf(err->message, sizeof(err->message), fmt, ap);
		va_end(ap);
		if (n >= (int)sizeof(err->message)) { /* clipped: never inside a UTF-8 character */
			size_t len = strlen(err->message), i = len;
			while (i > 0 && ((unsigned char)err->message[i - 1] & 0xC0) == 0x80)
				i--;
			unsigned char lead = i > 0 ? (unsigned char)err->message[i - 1] : 0;
			size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
			if (lead >= 0xC0 && len - (i - 1) < need)
				err->message[i - 1] = '\0';
		}
	}
	return code;
}

int hf__err_code(hf_error *err, int code)
{
	return hf__err(err, code, "%s", hf_strerror(code));
}

void hf__err_clear(hf_error *err)
{
	if (err) {
		err->code = HF_OK;
		err->message[0] = '\0';
	}
}
