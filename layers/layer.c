/* Helpers every user of the data-source interface shares (layer.h). */
#include "config.h"

#include <errno.h>
#include <stdlib.h>

#include "layer.h"

static ssize_t xattr_call(struct ovl_layer *l, int h, const char *name, const char *xname, char *buf, size_t size)
{
	return xname ? l->ops->getxattrat(l, h, name, xname, buf, size) : l->ops->listxattrat(l, h, name, buf, size);
}

ssize_t ovl_layer_xattr(struct ovl_layer *l, int h, const char *name, const char *xname, char *small, size_t small_size,
			char **big, char **data)
{
	char *buf = small;
	size_t size = small_size;
	ssize_t len;
	for (int tries = 0;; tries++) {
		/* a byte kept for the NUL: a list's last name is terminated whatever the layer gave */
		len = xattr_call(l, h, name, xname, buf, size - 1);
		if (len >= 0 || errno != ERANGE || tries == 1)
			break;
		if ((len = xattr_call(l, h, name, xname, NULL, 0)) < 0)
			return -1;
		free(*big);
		size = (size_t)len + 2; /* never 1: a size of 0 would ask for the length */
		if ((*big = buf = malloc(size)) == NULL) {
			errno = ENOMEM;
			return -1;
		}
	}
	if (len >= 0)
		buf[len] = '\0';
	*data = buf;
	return len;
}
