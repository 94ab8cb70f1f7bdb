/* containerd-fuse-overlayfs-grpc: the snapshotter shim's shared declarations. */
#ifndef SHIM_H
#define SHIM_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>
#include <protobuf-c/protobuf-c.h>

/* gRPC status codes containerd's errdefs maps back (COMPAT.md). */
enum grpc_code {
	GRPC_OK = 0,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_NOT_FOUND = 5,
	GRPC_ALREADY_EXISTS = 6,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
};

struct status {
	enum grpc_code code;
	char message[512];
};

void status_set(struct status *st, enum grpc_code code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* The gRPC code for an errno of a system call. */
enum grpc_code status_code_of_errno(int err);

/* ---- log.c ---- */
void shim_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void shim_vlog(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
extern bool shim_debug;
#define shim_trace(...) do { if (shim_debug) shim_log(__VA_ARGS__); } while (0)

/* ---- rpc.c: gRPC over HTTP/2 (nghttp2) on a unix socket, one event loop ---- */
struct rpc_call;
/* Ends a call with an error; messages already emitted are dropped. */
void rpc_call_fail(struct rpc_call *call, const struct status *st);
/* Emits one reply message (a unary reply, or one of a server stream). */
void rpc_call_reply(struct rpc_call *call, const ProtobufCMessage *msg);
int rpc_serve(int listen_fd, ProtobufCService *service, void (*on_ready)(void));

/* ---- labels ---- */
struct labels {
	size_t n;
	char **keys, **values;
};
void labels_free(struct labels *l);
const char *labels_get(const struct labels *l, const char *key);
/* Sets (copies) or, with value NULL or "", removes a label. */
int labels_set(struct labels *l, const char *key, const char *value);
/* containerd's limit on one key/value pair, and whole id maps (idmap.c). */
int labels_validate(const struct labels *l, struct status *st);

/* ---- idmap.c: the id-mapping labels of user-namespace snapshots ---- */
#define LABEL_UIDMAPPING "containerd.io/snapshot/uidmapping"
#define LABEL_GIDMAPPING "containerd.io/snapshot/gidmapping"
/* InvalidArgument when KEY is a mapping label and VALUE not a whole map:
 * CTR:HOST:SIZE ranges joined by ',', sizes above 0, none past id 2^32-1,
 * no two overlapping on either side. */
int idmap_validate(const char *key, const char *value, struct status *st);
bool idmap_labelled(const struct labels *l);
/* "NAME=C:H:S:C2:H2:S2" for fuse-overlayfs, from a valid label value. */
char *idmap_option(const char *name, const char *value);

/* ---- store.c: metadata in SQLite ---- */
enum snap_kind { KIND_UNKNOWN = 0, KIND_VIEW = 1, KIND_ACTIVE = 2, KIND_COMMITTED = 3 };

struct snap_info {
	int64_t id;
	char *name;
	char *parent; /* "" when none */
	enum snap_kind kind;
	struct timespec created, updated;
	struct labels labels;
	int64_t size, inodes; /* stored at commit */
};
void snap_info_free(struct snap_info *info);

struct store;
int store_open(struct store **out, const char *path, struct status *st);
void store_close(struct store *s);
int store_begin(struct store *s, bool write, struct status *st);
int store_commit(struct store *s, struct status *st);
void store_rollback(struct store *s);
int store_get(struct store *s, const char *key, struct snap_info *out, struct status *st);
/* Ids of the parent chain, nearest parent first. */
int store_parent_ids(struct store *s, int64_t id, int64_t **ids, size_t *n, struct status *st);
int store_create(struct store *s, enum snap_kind kind, const char *key, const char *parent,
		 const struct labels *labels, int64_t *id, struct status *st);
int store_commit_active(struct store *s, const char *key, const char *name,
			const struct labels *labels, int64_t size, int64_t inodes,
			struct status *st);
int store_remove(struct store *s, const char *key, int64_t *id, enum snap_kind *kind,
		 struct status *st);
int store_set_labels(struct store *s, int64_t id, const struct labels *labels, struct status *st);
/* The callback may keep INFO, leaving it zeroed; what it leaves is freed. */
typedef int (*store_walk_fn)(struct snap_info *info, void *arg);
int store_walk(struct store *s, store_walk_fn fn, void *arg, struct status *st);
/* Whether a snapshot with this id exists (for Cleanup). */
int store_has_id(struct store *s, int64_t id, bool *has, struct status *st);

/* ---- filter.c: containerd's filter syntax ---- */
struct filter;
int filter_parse(const char *text, struct filter **out, struct status *st);
bool filter_match(const struct filter *f, const struct snap_info *info);
void filter_free(struct filter *f);

/* ---- snapdirs.c: the directories under ROOT and the mounts handed back ---- */
enum mount_mode { MOUNT_HELPER, MOUNT_SELF };

struct shim {
	char *root;
	int root_fd, snapshots_fd;
	enum mount_mode mode;
	struct store *store;
	const char *fuse_overlayfs; /* program name, searched in PATH */
};

struct mount_spec {
	char *type, *source;
	char **options;
	size_t n_options;
};
void mount_specs_free(struct mount_spec *m, size_t n);

/* mkdir -p of PATH's parents, and of PATH itself WITH_LAST; errno on failure. */
int make_dirs(const char *path, mode_t mode, bool with_last);
int snapdirs_open(struct shim *sh, struct status *st);
/* Makes new-XXXXXX with fs (and work for an active snapshot); returns its name. */
int snapdirs_prepare(struct shim *sh, enum snap_kind kind, int64_t parent_id, char *tmpname,
		     size_t len, struct status *st);
int snapdirs_install(struct shim *sh, const char *tmpname, int64_t id, struct status *st);
void snapdirs_discard(struct shim *sh, const char *name);
int snapdirs_remove(struct shim *sh, int64_t id);
int snapdirs_usage(struct shim *sh, int64_t id, int64_t *size, int64_t *inodes, struct status *st);
int snapdirs_mounts(struct shim *sh, const struct snap_info *info, const int64_t *parents,
		    size_t n_parents, struct mount_spec **out, size_t *n_out, struct status *st);
/* Directories under snapshots/ that no snapshot owns. */
int snapdirs_cleanup(struct shim *sh, struct status *st);
/* Self-mount mode. */
int snapdirs_self_mount(struct shim *sh, const struct snap_info *info, const int64_t *parents,
			size_t n_parents, struct status *st);
int snapdirs_self_unmount(struct shim *sh, int64_t id, struct status *st);
/* After a restart: mount again what needs a mount, unmount what does not. */
int snapdirs_self_recover(struct shim *sh, struct status *st);
bool snapdirs_needs_self_mount(const struct shim *sh, const struct snap_info *info, size_t n_parents);

/* ---- check.c ---- */
int shim_check_supported(struct shim *sh, struct status *st);
/* Runs argv (PATH search), collecting its stderr; 0 when it exited 0. */
int run_program(char *const argv[], char *err, size_t errlen);
/* umount2, lazily if busy, else fusermount3 -u -z (not root). */
int unmount_path(const char *path, char *err, size_t errlen);

/* ---- service.c ---- */
ProtobufCService *snapshots_service(struct shim *sh);

#endif
