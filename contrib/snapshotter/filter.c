/* containerd's filter syntax, evaluated on snapshot infos:
 *   selectors := selector ("," selector)*      all must match
 *   selector  := fieldpath [("==" | "!=" | "~=") value]
 *   fieldpath := field ("." field)*            field: [A-Za-z0-9_]+ or "quoted"
 *   value     := quoted | run of non-space, non-comma bytes
 * "~=" also takes /regex/ and |regex| quoting.  A selector without an
 * operator asks whether the field is present. */
#include "config.h"

#include <ctype.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "shim.h"

enum op { OP_PRESENT, OP_EQUAL, OP_NOT_EQUAL, OP_MATCHES };

struct selector {
	char **path;
	size_t n_path;
	enum op op;
	char *value;
	regex_t re;
	bool re_ok;
};

struct filter {
	struct selector *sel;
	size_t n;
};

enum tok { T_EOF, T_QUOTED, T_VALUE, T_FIELD, T_SEP, T_OP, T_OTHER, T_ILLEGAL };

struct scanner {
	const char *in;
	size_t pos;
	bool value; /* the next token is a value (after an operator) */
	double re_budget; /* regex_cost left for the filter's regular expressions */
};

static bool is_field_byte(unsigned char c)
{
	return c == '_' || isalnum(c);
}

static bool is_quote(char c)
{
	return c == '"' || c == '/' || c == '|';
}

static bool skip_quoted(struct scanner *s, char quote)
{
	for (;;) {
		char c = s->in[s->pos++];
		if (c == quote)
			return true;
		if (c == '\0' || c == '\n') {
			s->pos--;
			return false;
		}
		if (c == '\\') {
			if (s->in[s->pos] == '\0')
				return false;
			s->pos++;
		}
	}
}

static enum tok scan(struct scanner *s, size_t *start, size_t *end)
{
	while (isspace((unsigned char)s->in[s->pos]))
		s->pos++;
	*start = s->pos;
	char c = s->in[s->pos];
	enum tok t;
	if (c == '\0') {
		t = T_EOF;
	} else if (is_quote(c)) {
		s->pos++;
		t = skip_quoted(s, c) ? T_QUOTED : T_ILLEGAL;
	} else if (c == ',' || c == '.') {
		s->pos++;
		s->value = false;
		t = T_SEP;
	} else if (c == '=' || c == '!' || c == '~') {
		while (strchr("=!~", s->in[s->pos]) && s->in[s->pos])
			s->pos++;
		s->value = true;
		t = T_OP;
	} else if (s->value) {
		while (s->in[s->pos] && s->in[s->pos] != ',' && !isspace((unsigned char)s->in[s->pos]))
			s->pos++;
		s->value = false;
		t = T_VALUE;
	} else if (is_field_byte((unsigned char)c)) {
		while (is_field_byte((unsigned char)s->in[s->pos]))
			s->pos++;
		t = T_FIELD;
	} else {
		s->pos++;
		t = T_OTHER;
	}
	*end = s->pos;
	return t;
}

static char peek(const struct scanner *s)
{
	const char *p = s->in + s->pos;
	while (isspace((unsigned char)*p))
		p++;
	return *p;
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)tolower((unsigned char)c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static size_t put_utf8(char *o, unsigned long cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* Go string-literal escapes; the delimiter may be escaped too. NULL when malformed. */
static char *unquote(const char *text, size_t len)
{
	char quote = text[0];
	char *out = malloc(len * 4 + 1);
	if (!out)
		return NULL;
	size_t o = 0;
	for (size_t i = 1; i + 1 < len; i++) {
		char c = text[i];
		if (c != '\\') {
			out[o++] = c;
			continue;
		}
		c = text[++i];
		static const char simple[] = "abfnrtv\\", values[] = "\a\b\f\n\r\t\v\\";
		const char *sp = c ? strchr(simple, c) : NULL;
		if (sp) {
			out[o++] = values[sp - simple];
		} else if (c == quote) {
			out[o++] = c;
		} else if (c >= '0' && c <= '7') {
			int v = 0;
			for (int k = 0; k < 3; k++, i++) {
				if (text[i] < '0' || text[i] > '7')
					goto bad;
				v = v * 8 + (text[i] - '0');
			}
			i--;
			if (v > 255)
				goto bad;
			out[o++] = (char)v;
		} else if (c == 'x' || c == 'u' || c == 'U') {
			int digits = c == 'x' ? 2 : c == 'u' ? 4 : 8;
			unsigned long v = 0;
			for (int k = 0; k < digits; k++) {
				int h = hex_value(text[++i]);
				if (h < 0 || i + 1 >= len)
					goto bad;
				v = v * 16 + (unsigned long)h;
			}
			if (c == 'x')
				out[o++] = (char)v;
			else if (v > 0x10ffff || (v >= 0xd800 && v < 0xe000))
				goto bad;
			else
				o += put_utf8(out + o, v);
		} else {
			goto bad;
		}
	}
	out[o] = '\0';
	return out;
bad:
	free(out);
	return NULL;
}

/* What an ERE costs glibc's regcomp and regexec, in nodes; HUGE_VAL: too
 * much at any size.  glibc copies a piece for each repetition ('+' once,
 * {m,n} n times), so nested repetitions grow exponentially; it also takes
 * exponential time, in regcomp, on repetitions of pieces that may be empty
 * or hold repetitions and on anchors inside ((a|^)(a|^)..., ^((a*)*){25},
 * ^(a|b|)*(a|b|)*...), and, in regexec, on backreferences.  So those are
 * refused: a repeated group holds no repetition and no empty alternative,
 * '^' only starts and '$' only ends the expression, and there is no word
 * anchor (\b \< ...) nor backreference.  Go's regexp, containerd's, has no
 * backreference either; the other refusals are ours: such a filter matches
 * nothing here, where containerd's would run. */
static double regex_cost(const char *re)
{
	enum { MAX_DEPTH = 64 };
	struct level {
		double total, last; /* the group so far, and its last piece */
		bool rep;           /* it holds a repetition */
		bool empty;         /* it has an empty alternative */
		bool last_fixed;    /* its last piece may not be repeated */
	} lv[MAX_DEPTH] = { { 0 } };
	int d = 0;
	for (const char *p = re; *p; p++) {
		double piece = 1;
		bool fixed = false;
		if (*p == '\\' && p[1] && strchr("123456789bB<>`'", p[1])) {
			return HUGE_VAL;
		} else if (*p == '\\' && p[1]) {
			p++;
		} else if ((*p == '^' && p != re) || (*p == '$' && p[1])) {
			return HUGE_VAL;
		} else if (*p == '^' || *p == '$') {
			fixed = true;
		} else if (*p == '[') { /* one node: skip to its ']' (a leading ']' and [:class:] are inside) */
			const char *q = p + 1 + (p[1] == '^');
			q += *q == ']';
			for (; *q && *q != ']'; q++)
				if (*q == '[' && (q[1] == ':' || q[1] == '.' || q[1] == '=') && strchr(q + 2, ']'))
					q = strchr(q + 2, ']');
			p = *q ? q : q - 1;
		} else if (*p == '(') {
			if (++d == MAX_DEPTH)
				return HUGE_VAL;
			lv[d] = (struct level){ .empty = p[1] == ')' || p[1] == '|' };
			continue;
		} else if (*p == ')' && d > 0) {
			fixed = lv[d].rep || lv[d].empty;
			piece = lv[d].total + 1;
			d--;
			lv[d].rep |= lv[d + 1].rep;
		} else if (*p == '|') {
			lv[d].empty |= p[1] == '|' || p[1] == ')' || p[1] == '\0';
			lv[d].total += 1;
			lv[d].last = 0;
			lv[d].last_fixed = true;
			continue;
		} else if (*p == '*' || *p == '?' || *p == '+' ||
			   (*p == '{' && (p[1] == ',' || (p[1] >= '0' && p[1] <= '9')))) {
			if (lv[d].last_fixed || lv[d].last == 0)
				return HUGE_VAL;
			double copies = 2;
			if (*p == '{') {
				char *end;
				double m = strtod(p + 1, &end), n = m;
				if (*end == ',')
					n = end[1] >= '0' && end[1] <= '9' ? strtod(end + 1, &end) : m + 1;
				copies = (m > n ? m : n) + 1;
				p = *end == '}' ? end : p;
			}
			lv[d].total += lv[d].last * (copies - 1) + 1;
			lv[d].last = lv[d].last * copies + 1;
			lv[d].rep = lv[d].last_fixed = true;
			if (lv[d].total > 1e15)
				return HUGE_VAL;
			continue;
		}
		lv[d].total += piece;
		lv[d].last = piece;
		lv[d].last_fixed = fixed;
	}
	double sum = 0;
	for (int i = 0; i <= d; i++)
		sum += lv[i].total;
	return sum;
}

static int parse_error(struct status *st, const char *text, size_t pos, const char *what)
{
	status_set(st, GRPC_INVALID_ARGUMENT, "filter %.200s: at byte %zu: %s", text, pos, what);
	return -1;
}

static int add_path(struct selector *sel, char *field)
{
	char **p = realloc(sel->path, (sel->n_path + 1) * sizeof(char *));
	if (!p) {
		free(field);
		return -1;
	}
	sel->path = p;
	sel->path[sel->n_path++] = field;
	return 0;
}

static int parse_selector(struct scanner *s, const char *text, struct selector *sel, struct status *st)
{
	for (;;) {
		size_t a, b;
		enum tok t = scan(s, &a, &b);
		char *field;
		if (t == T_FIELD)
			field = strndup(text + a, b - a);
		else if (t == T_QUOTED && text[a] == '"')
			field = unquote(text + a, b - a);
		else
			return parse_error(st, text, a, "expected a field or a quoted field");
		if (!field || add_path(sel, field) < 0)
			return parse_error(st, text, a, "bad quoted field");
		if (peek(s) != '.')
			break;
		scan(s, &a, &b);
	}
	char next = peek(s);
	if (next == ',' || next == '\0') {
		sel->op = OP_PRESENT;
		return 0;
	}
	size_t a, b;
	enum tok t = scan(s, &a, &b);
	if (t != T_OP)
		return parse_error(st, text, a, "expected an operator (\"==\", \"!=\" or \"~=\")");
	if (b - a == 2 && memcmp(text + a, "==", 2) == 0)
		sel->op = OP_EQUAL;
	else if (b - a == 2 && memcmp(text + a, "!=", 2) == 0)
		sel->op = OP_NOT_EQUAL;
	else if (b - a == 2 && memcmp(text + a, "~=", 2) == 0)
		sel->op = OP_MATCHES;
	else
		return parse_error(st, text, a, "unsupported operator");
	t = scan(s, &a, &b);
	if (t == T_VALUE || t == T_FIELD)
		sel->value = strndup(text + a, b - a);
	else if (t == T_QUOTED && (text[a] == '"' || sel->op == OP_MATCHES))
		sel->value = unquote(text + a, b - a);
	else
		return parse_error(st, text, a, "expected a value or a quoted value");
	if (!sel->value)
		return parse_error(st, text, a, "bad quoted value");
	/* As containerd: a regular expression that does not compile matches
	 * nothing; nor do those past the filter's budget (regex_cost). */
	if (sel->op == OP_MATCHES) {
		double cost = regex_cost(sel->value);
		if (cost <= s->re_budget) {
			s->re_budget -= cost;
			sel->re_ok = regcomp(&sel->re, sel->value, REG_EXTENDED | REG_NOSUB) == 0;
		}
	}
	return 0;
}

static void selector_free(struct selector *sel)
{
	for (size_t i = 0; i < sel->n_path; i++)
		free(sel->path[i]);
	free(sel->path);
	free(sel->value);
	if (sel->re_ok)
		regfree(&sel->re);
}

void filter_free(struct filter *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n; i++)
		selector_free(&f->sel[i]);
	free(f->sel);
	free(f);
}

int filter_parse(const char *text, struct filter **out, struct status *st)
{
	struct filter *f = calloc(1, sizeof(*f));
	if (!f) {
		status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return -1;
	}
	/* regular expressions of regex_cost 1000 take glibc up to ~20 ms on a 4 KiB label */
	struct scanner s = { .in = text, .re_budget = 1000 };
	if (*text) {
		for (;;) {
			struct selector *p = realloc(f->sel, (f->n + 1) * sizeof(*p));
			if (!p) {
				filter_free(f);
				status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
				return -1;
			}
			f->sel = p;
			memset(&f->sel[f->n], 0, sizeof(f->sel[f->n]));
			f->n++;
			if (parse_selector(&s, text, &f->sel[f->n - 1], st) < 0) {
				filter_free(f);
				return -1;
			}
			size_t a, b;
			enum tok t = scan(&s, &a, &b);
			if (t == T_EOF)
				break;
			if (t != T_SEP || text[a] != ',') {
				filter_free(f);
				return parse_error(st, text, a, "unexpected input");
			}
		}
	}
	*out = f;
	return 0;
}

static const char *kind_name(enum snap_kind kind)
{
	switch (kind) {
	case KIND_ACTIVE:
		return "active";
	case KIND_VIEW:
		return "view";
	case KIND_COMMITTED:
		return "committed";
	default:
		return NULL;
	}
}

/* The value of a field path on a snapshot, as containerd's snapshot adaptor gives it. */
static const char *field_value(const struct selector *sel, const struct snap_info *info, char **owned)
{
	*owned = NULL;
	const char *f = sel->path[0];
	if (strcmp(f, "kind") == 0)
		return kind_name(info->kind);
	if (strcmp(f, "name") == 0)
		return info->name;
	if (strcmp(f, "parent") == 0)
		return info->parent;
	if (strcmp(f, "labels") == 0 && info->labels.n) {
		size_t len = 0;
		for (size_t i = 1; i < sel->n_path; i++)
			len += strlen(sel->path[i]) + 1;
		char *key = calloc(1, len + 1);
		if (!key)
			return NULL;
		for (size_t i = 1; i < sel->n_path; i++) {
			if (i > 1)
				strcat(key, ".");
			strcat(key, sel->path[i]);
		}
		*owned = key;
		return labels_get(&info->labels, key);
	}
	return NULL;
}

bool filter_match(const struct filter *f, const struct snap_info *info)
{
	for (size_t i = 0; i < f->n; i++) {
		const struct selector *sel = &f->sel[i];
		char *owned;
		const char *value = field_value(sel, info, &owned);
		bool ok;
		switch (sel->op) {
		case OP_PRESENT:
			ok = value != NULL;
			break;
		case OP_EQUAL:
			ok = value && strcmp(value, sel->value) == 0;
			break;
		case OP_NOT_EQUAL:
			ok = strcmp(value ? value : "", sel->value) != 0;
			break;
		default:
			ok = sel->re_ok && regexec(&sel->re, value ? value : "", 0, NULL, 0) == 0;
			break;
		}
		free(owned);
		if (!ok)
			return false;
	}
	return true;
}
