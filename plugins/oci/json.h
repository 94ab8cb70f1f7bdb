/* A small strict JSON parser (RFC 8259) for the few documents of an OCI
 * image layout: oci-layout, index.json, manifests.  The whole document
 * becomes a tree of nodes in one array, strings decoded in one buffer. */
#ifndef OCI_JSON_H
#define OCI_JSON_H

#include <stddef.h>
#include <stdint.h>

enum json_type { JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUM, JSON_STR, JSON_ARR, JSON_OBJ };

struct json_node {
	enum json_type type;
	uint32_t next;   /* next element or member of the parent; 0: none */
	uint32_t child;  /* first element or member (arrays, objects); 0: none */
	const char *key; /* an object member's name (decoded, NUL-terminated) */
	const char *str; /* a string (decoded) or a number's text, NUL-terminated */
	size_t len;      /* of str */
};

struct json_doc {
	struct json_node *n; /* n[0] is the document's value */
	size_t count, cap;
	char *strs;          /* decoded strings */
	size_t strs_len;
};

/* Nesting deeper than this is refused (a stack bound, nothing real nests so). */
#define JSON_MAX_DEPTH 64

/* 0, or -1 with a reason (and its byte offset) in err. */
int json_parse(const char *text, size_t len, struct json_doc *doc, char *err, size_t errlen);
void json_free(struct json_doc *doc);

static inline const struct json_node *json_root(const struct json_doc *d)
{
	return &d->n[0];
}
/* The value of member key of object o (the last one if repeated, as Go's
 * encoding/json reads it); NULL when absent or o is not an object. */
const struct json_node *json_get(const struct json_doc *d, const struct json_node *o, const char *key);
/* Iterates the elements of an array (or members of an object): first, then next; NULL at the end. */
const struct json_node *json_first(const struct json_doc *d, const struct json_node *a);
const struct json_node *json_next(const struct json_doc *d, const struct json_node *e);
/* The string, or NULL when the node is absent or not a string. */
const char *json_str(const struct json_node *n);
/* 0 and the value when the node is an integer (no fraction, no exponent) in int64 range. */
int json_int(const struct json_node *n, int64_t *out);

#endif
