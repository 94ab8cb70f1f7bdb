/* OCI image layouts: the layer blobs of the image named REF, bottom first
 * as the manifest lists them. */
#ifndef OCI_LAYOUT_H
#define OCI_LAYOUT_H

#include <stdint.h>

#define OCI_LAYOUT_MAX_LAYERS 500

struct oci_layout_layer {
	char digest[7 + 64 + 1]; /* "sha256:<hex>" */
	int64_t size;
};

struct oci_layout {
	int dirfd;               /* the layout's directory */
	size_t n;
	struct oci_layout_layer layers[OCI_LAYOUT_MAX_LAYERS];
};

/* Reads the layout at dir: 0, or -1 with a one-line reason in err. */
int oci_layout_read(const char *dir, const char *ref, struct oci_layout *out, char *err, size_t errlen);
void oci_layout_free(struct oci_layout *l);
/* Opens blobs/sha256/<hex> below dirfd, following no symlink: fd or -1;
 * *algdir (unless NULL) the directory blobs/sha256, for the caller to close. */
int oci_layout_open_blob(int dirfd, const char *digest, int *algdir);

#endif
