/* Growable arrays: the one place that doubles a buffer. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "overlay.h"

int ovl_grow(void *ptr, size_t *cap, size_t need, size_t elem_size, size_t initial)
{
	void **p = ptr;
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap * 2 : initial;
	while (n < need)
		n *= 2;
	void *q = realloc(*p, n * elem_size);
	if (q == NULL)
		return -ENOMEM;
	*p = q;
	*cap = n;
	return 0;
}
