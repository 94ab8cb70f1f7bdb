/* A small strict JSON parser: the grammar of RFC 8259 and nothing more
 * (no comments, no trailing commas, no leading zeros, no raw control
 * characters in strings, no unpaired surrogates), bounded in depth.  Strings
 * with an escaped NUL are refused: every name and digest is compared as a C
 * string. */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "oci.h"

struct parser {
	const char *p, *start, *end;
	struct json_doc *doc;
	char *err;
	size_t errlen;
	int depth;
};

static int fail(struct parser *ps, const char *why)
{
	if (ps->err && ps->errlen)
		snprintf(ps->err, ps->errlen, "%s at byte %zu", why, (size_t)(ps->p - ps->start));
	return -1;
}

static void skip_ws(struct parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static long new_node(struct parser *ps, enum json_type t)
{
	struct json_doc *d = ps->doc;
	if (d->count == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 64;
		struct json_node *n = realloc(d->n, cap * sizeof *n);
		if (!n)
			return fail(ps, "out of memory");
		d->n = n;
		d->cap = cap;
	}
	memset(&d->n[d->count], 0, sizeof d->n[0]);
	d->n[d->count].type = t;
	return (long)d->count++;
}

static int hex4(struct parser *ps, unsigned *out)
{
	if (ps->end - ps->p < 4)
		return fail(ps, "short \\u escape");
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char c = *ps->p++;
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return fail(ps, "bad \\u escape");
	}
	*out = v;
	return 0;
}

static char *put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		*o++ = (char)cp;
	} else if (cp < 0x800) {
		*o++ = (char)(0xC0 | cp >> 6);
		*o++ = (char)(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		*o++ = (char)(0xE0 | cp >> 12);
		*o++ = (char)(0x80 | (cp >> 6 & 0x3F));
		*o++ = (char)(0x80 | (cp & 0x3F));
	} else {
		*o++ = (char)(0xF0 | cp >> 18);
		*o++ = (char)(0x80 | (cp >> 12 & 0x3F));
		*o++ = (char)(0x80 | (cp >> 6 & 0x3F));
		*o++ = (char)(0x80 | (cp & 0x3F));
	}
	return o;
}

/* \uXXXX, and its low half when it is a high surrogate. */
static int unicode_escape(struct parser *ps, char **o)
{
	unsigned cp, lo;
	if (hex4(ps, &cp) < 0)
		return -1;
	if (cp >= 0xDC00 && cp <= 0xDFFF)
		return fail(ps, "unpaired low surrogate");
	if (cp >= 0xD800 && cp <= 0xDBFF) {
		if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
			return fail(ps, "unpaired high surrogate");
		ps->p += 2;
		if (hex4(ps, &lo) < 0)
			return -1;
		if (lo < 0xDC00 || lo > 0xDFFF)
			return fail(ps, "unpaired high surrogate");
		cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
	}
	if (cp == 0)
		return fail(ps, "NUL in a string");
	*o = put_utf8(*o, cp);
	return 0;
}

/* A string at ps->p (its opening quote), decoded into the string buffer.
 * The decoded form is never longer than the text less its quotes, so the
 * buffer of the text's length and a NUL a string always has room. */
static int parse_string(struct parser *ps, const char **out, size_t *len)
{
	static const char esc_in[] = "\"\\/bfnrt", esc_out[] = "\"\\/\b\f\n\r\t";
	char *start = ps->doc->strs + ps->doc->strs_len, *o = start;
	ps->p++;
	for (;;) {
		if (ps->p >= ps->end)
			return fail(ps, "unterminated string");
		unsigned char c = (unsigned char)*ps->p++;
		if (c == '"')
			break;
		if (c < 0x20)
			return fail(ps, "control character in a string");
		if (c != '\\') {
			*o++ = (char)c;
			continue;
		}
		if (ps->p >= ps->end)
			return fail(ps, "unterminated string");
		char e = *ps->p++;
		const char *k = e ? strchr(esc_in, e) : NULL;
		if (k)
			*o++ = esc_out[k - esc_in];
		else if (e != 'u')
			return fail(ps, "bad escape");
		else if (unicode_escape(ps, &o) < 0)
			return -1;
	}
	*o++ = 0;
	*out = start;
	*len = (size_t)(o - start) - 1;
	ps->doc->strs_len += (size_t)(o - start);
	return 0;
}

static int parse_number(struct parser *ps, struct json_node *n)
{
	const char *s = ps->p;
	if (ps->p < ps->end && *ps->p == '-')
		ps->p++;
	if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
		return fail(ps, "bad number");
	if (*ps->p == '0')
		ps->p++;
	else
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
			ps->p++;
	if (ps->p < ps->end && *ps->p == '.') {
		ps->p++;
		if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
			return fail(ps, "bad number");
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
			ps->p++;
	}
	if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
		ps->p++;
		if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
			ps->p++;
		if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9')
			return fail(ps, "bad number");
		while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
			ps->p++;
	}
	/* kept in the string buffer: the text goes once parsed; a number is
	 * followed by a delimiter or the end, so its NUL fits too */
	char *o = ps->doc->strs + ps->doc->strs_len;
	n->len = (size_t)(ps->p - s);
	memcpy(o, s, n->len);
	o[n->len] = 0;
	ps->doc->strs_len += n->len + 1;
	n->str = o;
	return 0;
}

static int parse_literal(struct parser *ps, const char *word)
{
	size_t l = strlen(word);
	if ((size_t)(ps->end - ps->p) < l || memcmp(ps->p, word, l))
		return fail(ps, "unexpected character");
	ps->p += l;
	return 0;
}

static long parse_value(struct parser *ps);

/* The elements (members: with_keys) of an array or object up to close. */
static int parse_items(struct parser *ps, long self, char close, int with_keys)
{
	uint32_t prev = 0;
	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		return 0;
	}
	for (;;) {
		const char *key = NULL;
		size_t klen;
		skip_ws(ps);
		if (with_keys) {
			if (ps->p >= ps->end || *ps->p != '"')
				return fail(ps, "expected a member name");
			if (parse_string(ps, &key, &klen) < 0)
				return -1;
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p++ != ':')
				return fail(ps, "expected ':'");
		}
		long v = parse_value(ps);
		if (v < 0)
			return -1;
		ps->doc->n[v].key = key;
		if (prev)
			ps->doc->n[prev].next = (uint32_t)v;
		else
			ps->doc->n[self].child = (uint32_t)v;
		prev = (uint32_t)v;
		skip_ws(ps);
		if (ps->p >= ps->end)
			return fail(ps, "unterminated array or object");
		char c = *ps->p++;
		if (c == close)
			return 0;
		if (c != ',')
			return fail(ps, "expected ',' or the end of the array or object");
	}
}

static long parse_value(struct parser *ps)
{
	skip_ws(ps);
	if (ps->p >= ps->end)
		return fail(ps, "expected a value");
	char c = *ps->p;
	enum json_type t = c == '{' ? JSON_OBJ : c == '[' ? JSON_ARR : c == '"' ? JSON_STR :
			   c == 't' ? JSON_TRUE : c == 'f' ? JSON_FALSE : c == 'n' ? JSON_NULL : JSON_NUM;
	long self = new_node(ps, t);
	if (self < 0)
		return -1;
	int r;
	switch (t) {
	case JSON_OBJ:
	case JSON_ARR:
		if (++ps->depth > JSON_MAX_DEPTH)
			return fail(ps, "nested too deeply");
		r = parse_items(ps, self, t == JSON_OBJ ? '}' : ']', t == JSON_OBJ);
		ps->depth--;
		break;
	case JSON_STR: {
		const char *s;
		size_t l;
		r = parse_string(ps, &s, &l);
		ps->doc->n[self].str = s;
		ps->doc->n[self].len = l;
		break;
	}
	case JSON_TRUE: r = parse_literal(ps, "true"); break;
	case JSON_FALSE: r = parse_literal(ps, "false"); break;
	case JSON_NULL: r = parse_literal(ps, "null"); break;
	default: r = parse_number(ps, &ps->doc->n[self]); break;
	}
	return r < 0 ? -1 : self;
}

int json_parse(const char *text, size_t len, struct json_doc *doc, char *err, size_t errlen)
{
	struct parser ps = { .p = text, .start = text, .end = text + len, .doc = doc, .err = err, .errlen = errlen };
	memset(doc, 0, sizeof *doc);
	doc->strs = malloc(len + 1);
	if (!doc->strs) {
		errno = ENOMEM;
		return fail(&ps, "out of memory");
	}
	if (parse_value(&ps) < 0)
		goto bad;
	skip_ws(&ps);
	if (ps.p != ps.end) {
		fail(&ps, "trailing characters");
		goto bad;
	}
	return 0;
bad:
	json_free(doc);
	return -1;
}

void json_free(struct json_doc *doc)
{
	free(doc->n);
	free(doc->strs);
	memset(doc, 0, sizeof *doc);
}

const struct json_node *json_first(const struct json_doc *d, const struct json_node *a)
{
	if (!a || (a->type != JSON_ARR && a->type != JSON_OBJ) || !a->child)
		return NULL;
	return &d->n[a->child];
}

const struct json_node *json_next(const struct json_doc *d, const struct json_node *e)
{
	return e && e->next ? &d->n[e->next] : NULL;
}

const struct json_node *json_get(const struct json_doc *d, const struct json_node *o, const char *key)
{
	const struct json_node *found = NULL;
	if (!o || o->type != JSON_OBJ)
		return NULL;
	for (const struct json_node *m = json_first(d, o); m; m = json_next(d, m))
		if (!strcmp(m->key, key))
			found = m;
	return found;
}

const char *json_str(const struct json_node *n)
{
	return n && n->type == JSON_STR ? n->str : NULL;
}

int json_int(const struct json_node *n, int64_t *out)
{
	if (!n || n->type != JSON_NUM)
		return -1;
	return oci_parse_i64(n->str, n->len, out);
}
