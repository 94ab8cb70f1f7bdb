/* Snapshot labels: a small ordered map of strings. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "shim.h"

/* containerd's labels.Validate: a key and its value together at most 4096 bytes. */
#define MAX_LABEL 4096

void labels_free(struct labels *l)
{
	for (size_t i = 0; i < l->n; i++) {
		free(l->keys[i]);
		free(l->values[i]);
	}
	free(l->keys);
	free(l->values);
	*l = (struct labels){ 0 };
}

static ssize_t find(const struct labels *l, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->keys[i], key) == 0)
			return (ssize_t)i;
	return -1;
}

const char *labels_get(const struct labels *l, const char *key)
{
	ssize_t i = find(l, key);
	return i < 0 ? NULL : l->values[i];
}

int labels_set(struct labels *l, const char *key, const char *value)
{
	ssize_t i = find(l, key);
	if (!value || !*value) {
		/* containerd stores no empty label: setting one removes it */
		if (i >= 0) {
			free(l->keys[i]);
			free(l->values[i]);
			l->n--;
			memmove(l->keys + i, l->keys + i + 1, (l->n - (size_t)i) * sizeof(char *));
			memmove(l->values + i, l->values + i + 1, (l->n - (size_t)i) * sizeof(char *));
		}
		return 0;
	}
	char *v = strdup(value);
	if (!v)
		return -ENOMEM;
	if (i >= 0) {
		free(l->values[i]);
		l->values[i] = v;
		return 0;
	}
	char *k = strdup(key);
	char **ks = realloc(l->keys, (l->n + 1) * sizeof(char *));
	if (ks)
		l->keys = ks;
	char **vs = ks ? realloc(l->values, (l->n + 1) * sizeof(char *)) : NULL;
	if (vs)
		l->values = vs;
	if (!k || !ks || !vs) {
		free(k);
		free(v);
		return -ENOMEM;
	}
	l->keys[l->n] = k;
	l->values[l->n] = v;
	l->n++;
	return 0;
}

int labels_validate(const struct labels *l, struct status *st)
{
	for (size_t i = 0; i < l->n; i++) {
		if (!*l->keys[i]) {
			status_set(st, GRPC_INVALID_ARGUMENT, "label key must not be empty");
			return -1;
		}
		if (strlen(l->keys[i]) + strlen(l->values[i]) > MAX_LABEL) {
			status_set(st, GRPC_INVALID_ARGUMENT, "label key and value length (%zu bytes) greater than maximum size (%d bytes), key: %.64s",
				   strlen(l->keys[i]) + strlen(l->values[i]), MAX_LABEL, l->keys[i]);
			return -1;
		}
		if (idmap_validate(l->keys[i], l->values[i], st) < 0)
			return -1;
	}
	return 0;
}
