/* OCI image layouts (image-spec image-layout.md), as `skopeo copy ...
 * oci:DIR:REF` and umoci write them: oci-layout, index.json, and blobs under
 * blobs/<alg>/<hex>.  REF is the org.opencontainers.image.ref.name
 * annotation of an index.json entry; the entry is an image manifest, or an
 * image index (multi-platform) of which the entry for this machine's
 * platform is taken.  Every document read is verified against its
 * descriptor's digest and size; layer blobs are verified by the build.
 * Blobs are opened below the layout's directory without following symlinks:
 * a layout is as hostile as its layers. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "build.h"
#include "json.h"
#include "layout.h"

#define MAX_DOC (16u << 20) /* index.json, manifests */
#define MAX_NESTING 4       /* indexes within indexes */

static const char *const manifest_types[] = {
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.v2+json",
	NULL,
};
static const char *const index_types[] = {
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	NULL,
};
/* Compression is told by magic bytes; the type only has to be a layer's. */
static const char *const layer_types[] = {
	"application/vnd.oci.image.layer.v1.tar",
	"application/vnd.oci.image.layer.v1.tar+gzip",
	"application/vnd.oci.image.layer.v1.tar+zstd",
	"application/vnd.oci.image.layer.nondistributable.v1.tar",
	"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
	"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
	"application/vnd.docker.image.rootfs.diff.tar.gzip",
	"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
	"application/vnd.docker.image.rootfs.diff.tar",
	NULL,
};

static bool one_of(const char *s, const char *const *list)
{
	for (; s && *list; list++)
		if (!strcmp(s, *list))
			return true;
	return false;
}

int oci_layout_open_blob(int dirfd, const char *digest, int *algdir)
{
	const char *hex = oci_digest_hex(digest);
	if (!hex) {
		errno = EINVAL;
		return -1;
	}
	int blobs = openat(dirfd, "blobs", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (blobs < 0)
		return -1;
	int alg = openat(blobs, "sha256", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	close(blobs);
	if (alg < 0)
		return -1;
	int fd = openat(alg, hex, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	int e = errno;
	if (fd >= 0 && algdir)
		*algdir = alg;
	else
		close(alg);
	errno = e;
	return fd;
}

/* A whole small file (at most MAX_DOC bytes) into *buf. */
static int read_doc(int fd, char **buf, size_t *len, const char *name, char *err, size_t errlen)
{
	struct stat st;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > MAX_DOC) {
		snprintf(err, errlen, "%s: not a regular file of at most %u bytes", name, MAX_DOC);
		return -1;
	}
	*buf = malloc((size_t)st.st_size + 1);
	if (!*buf) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t r = pread(fd, *buf + got, (size_t)st.st_size - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			snprintf(err, errlen, "%s: %s", name, r < 0 ? strerror(errno) : "shorter than its size");
			free(*buf);
			return -1;
		}
		got += (size_t)r;
	}
	*len = got;
	return 0;
}

/* A JSON document at name (below dirfd), or the blob of descriptor d
 * verified against its digest and size. */
static int load_json(int dirfd, const char *name, const struct json_node *digest, const struct json_node *size,
		     struct json_doc *doc, char *err, size_t errlen)
{
	const char *dg = json_str(digest);
	int64_t want = -1;
	int fd = name ? openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK) : oci_layout_open_blob(dirfd, dg, NULL);
	const char *what = name ? name : dg ? dg : "a descriptor without a digest";
	char *buf;
	size_t len;
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", what, strerror(errno));
		return -1;
	}
	int r = read_doc(fd, &buf, &len, what, err, errlen);
	close(fd);
	if (r < 0)
		return -1;
	if (!name) {
		unsigned char d[32];
		char hex[65];
		struct sha256 sha;
		sha256_init(&sha);
		sha256_update(&sha, buf, len);
		sha256_final(&sha, d);
		sha256_hex(d, hex);
		if (strcmp(hex, oci_digest_hex(dg)) || (size && (json_int(size, &want) < 0 || (uint64_t)want != len))) {
			snprintf(err, errlen, "%s: digest or size mismatch (the blob is sha256:%s, %zu bytes)", dg, hex, len);
			free(buf);
			return -1;
		}
	}
	char jerr[128];
	r = json_parse(buf, len, doc, jerr, sizeof jerr);
	free(buf);
	if (r < 0)
		snprintf(err, errlen, "%s: not JSON: %s", what, jerr);
	return r;
}

/* GOARCH of this machine, the architecture names of the image spec. */
static const char *host_arch(void)
{
	static const char *const map[][2] = {
		{ "x86_64", "amd64" }, { "aarch64", "arm64" }, { "i686", "386" }, { "i386", "386" },
		{ "armv7l", "arm" },   { "ppc64le", "ppc64le" }, { "s390x", "s390x" }, { "riscv64", "riscv64" },
	};
	struct utsname u;
	if (uname(&u) == 0)
		for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
			if (!strcmp(u.machine, map[i][0]))
				return map[i][1];
	return "amd64";
}

/* The entry of index ix for name (a ref.name, or NULL: this platform). */
static const struct json_node *pick(const struct json_doc *d, const char *ref, char *err, size_t errlen)
{
	const struct json_node *ms = json_get(d, json_root(d), "manifests"), *found = NULL;
	const char *arch = host_arch();
	if (!ms || ms->type != JSON_ARR) {
		snprintf(err, errlen, "index without a manifests array");
		return NULL;
	}
	for (const struct json_node *m = json_first(d, ms); m; m = json_next(d, m)) {
		const struct json_node *p = json_get(d, m, "platform");
		const char *name = json_str(json_get(d, json_get(d, m, "annotations"), "org.opencontainers.image.ref.name"));
		bool match = ref ? name && !strcmp(name, ref) :
				   !strcmp(json_str(json_get(d, p, "os")) ?: "", "linux") &&
					   !strcmp(json_str(json_get(d, p, "architecture")) ?: "", arch);
		if (!match)
			continue;
		if (found && ref && strcmp(json_str(json_get(d, found, "digest")) ?: "", json_str(json_get(d, m, "digest")) ?: "")) {
			snprintf(err, errlen, "more than one image is named '%s'", ref);
			return NULL;
		}
		if (!found)
			found = m;
	}
	if (!found)
		snprintf(err, errlen, ref ? "no image named '%s' in index.json" : "no image for linux/%s in the image index",
			 ref ? ref : arch);
	return found;
}

static int add_layer(struct oci_layout *out, const struct json_doc *d, const struct json_node *l, char *err,
		     size_t errlen)
{
	const char *type = json_str(json_get(d, l, "mediaType")), *dg = json_str(json_get(d, l, "digest"));
	int64_t size;
	if (!one_of(type, layer_types)) {
		snprintf(err, errlen, "layer %zu: media type '%.100s' is not a tar layer (nor tar+gzip, tar+zstd)", out->n,
			 type ? type : "");
		return -1;
	}
	if (!oci_digest_hex(dg) || json_int(json_get(d, l, "size"), &size) < 0 || size < 0) {
		snprintf(err, errlen, "layer %zu: no sha256 digest or size", out->n);
		return -1;
	}
	if (out->n == OCI_LAYOUT_MAX_LAYERS) {
		snprintf(err, errlen, "more than %d layers", OCI_LAYOUT_MAX_LAYERS);
		return -1;
	}
	struct oci_layout_layer *x = &out->layers[out->n++];
	snprintf(x->digest, sizeof x->digest, "%s", dg);
	x->size = size;
	return 0;
}

static int manifest_layers(const struct json_doc *d, struct oci_layout *out, char *err, size_t errlen)
{
	const struct json_node *ls = json_get(d, json_root(d), "layers");
	if (!ls || ls->type != JSON_ARR) {
		snprintf(err, errlen, "manifest without a layers array");
		return -1;
	}
	for (const struct json_node *l = json_first(d, ls); l; l = json_next(d, l))
		if (add_layer(out, d, l, err, errlen) < 0)
			return -1;
	if (!out->n)
		snprintf(err, errlen, "the image has no layers");
	return out->n ? 0 : -1;
}

/* From index document d, the image named ref (or this platform's), down
 * through nested indexes to a manifest's layers. */
static int resolve(int dirfd, struct json_doc *d, const char *ref, struct oci_layout *out, char *err, size_t errlen)
{
	for (int depth = 0; depth < MAX_NESTING; depth++) {
		const struct json_node *m = pick(d, depth ? NULL : ref, err, errlen);
		if (!m)
			return -1;
		const char *type = json_str(json_get(d, m, "mediaType"));
		bool is_manifest = one_of(type, manifest_types);
		struct json_doc next;
		if (!is_manifest && !one_of(type, index_types)) {
			snprintf(err, errlen, "'%s': media type '%.100s' is neither a manifest nor an index", ref,
				 type ? type : "");
			return -1;
		}
		if (load_json(dirfd, NULL, json_get(d, m, "digest"), json_get(d, m, "size"), &next, err, errlen) < 0)
			return -1;
		json_free(d);
		*d = next;
		if (is_manifest)
			return manifest_layers(d, out, err, errlen);
	}
	snprintf(err, errlen, "image indexes nested more than %d deep", MAX_NESTING);
	return -1;
}

static int check_layout_file(int dirfd, char *err, size_t errlen)
{
	struct json_doc d;
	if (load_json(dirfd, "oci-layout", NULL, NULL, &d, err, errlen) < 0)
		return -1;
	const char *v = json_str(json_get(&d, json_root(&d), "imageLayoutVersion"));
	int ok = v && !strncmp(v, "1.", 2);
	if (!ok)
		snprintf(err, errlen, "oci-layout: imageLayoutVersion '%.20s' is not 1.x", v ? v : "");
	json_free(&d);
	return ok ? 0 : -1;
}

int oci_layout_read(const char *dir, const char *ref, struct oci_layout *out, char *err, size_t errlen)
{
	struct json_doc d;
	memset(out, 0, sizeof *out);
	out->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (out->dirfd < 0) {
		snprintf(err, errlen, "not an OCI image layout directory: %s", strerror(errno));
		return -1;
	}
	if (check_layout_file(out->dirfd, err, errlen) < 0 ||
	    load_json(out->dirfd, "index.json", NULL, NULL, &d, err, errlen) < 0)
		goto bad;
	int r = resolve(out->dirfd, &d, ref, out, err, errlen);
	json_free(&d);
	if (r == 0)
		return 0;
bad:
	close(out->dirfd);
	out->dirfd = -1;
	return -1;
}

void oci_layout_free(struct oci_layout *l)
{
	if (l->dirfd >= 0)
		close(l->dirfd);
	l->dirfd = -1;
}
