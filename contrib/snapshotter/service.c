/* containerd's Snapshots service (api/services/snapshots/v1) on top of the
 * metadata store and the snapshot directories.  Each call is one SQLite
 * transaction; directories change before the transaction commits, so a crash
 * leaves at worst a directory without metadata, which Cleanup removes. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "shim.h"
#include "snapshots.pb-c.h"

#define V1(name) Containerd__Services__Snapshots__V1__##name
typedef Containerd__Types__Mount Mount;
typedef Google__Protobuf__Empty Empty;
typedef Google__Protobuf__Timestamp Timestamp;

/* Every map<string,string> of the protocol is generated with this layout. */
typedef V1(Info__LabelsEntry) LabelsEntry;

static struct shim *shim_of(void *service);

static int labels_from_entries(size_t n, void *const *entries, struct labels *out, struct status *st)
{
	*out = (struct labels){ 0 };
	for (size_t i = 0; i < n; i++) {
		const LabelsEntry *e = entries[i];
		if (labels_set(out, e->key, e->value) < 0) {
			labels_free(out);
			status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
			return -1;
		}
	}
	if (labels_validate(out, st) < 0) {
		labels_free(out);
		return -1;
	}
	return 0;
}

/* ---- replies built from our structures (freed by info_proto_free etc.) ---- */

struct info_proto {
	V1(Info) info;
	Timestamp created, updated;
	LabelsEntry *entries;
	LabelsEntry **ptrs;
};

static int info_proto_init(struct info_proto *p, const struct snap_info *in)
{
	*p = (struct info_proto){ .info = CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__INIT,
				  .created = GOOGLE__PROTOBUF__TIMESTAMP__INIT,
				  .updated = GOOGLE__PROTOBUF__TIMESTAMP__INIT };
	p->info.name = in->name;
	p->info.parent = in->parent;
	p->info.kind = (V1(Kind))in->kind;
	p->created.seconds = in->created.tv_sec;
	p->created.nanos = (int32_t)in->created.tv_nsec;
	p->updated.seconds = in->updated.tv_sec;
	p->updated.nanos = (int32_t)in->updated.tv_nsec;
	p->info.created_at = &p->created;
	p->info.updated_at = &p->updated;
	if (in->labels.n) {
		p->entries = calloc(in->labels.n, sizeof(*p->entries));
		p->ptrs = calloc(in->labels.n, sizeof(*p->ptrs));
		if (!p->entries || !p->ptrs)
			return -1;
		for (size_t i = 0; i < in->labels.n; i++) {
			LabelsEntry e = CONTAINERD__SERVICES__SNAPSHOTS__V1__INFO__LABELS_ENTRY__INIT;
			e.key = in->labels.keys[i];
			e.value = in->labels.values[i];
			p->entries[i] = e;
			p->ptrs[i] = &p->entries[i];
		}
		p->info.n_labels = in->labels.n;
		p->info.labels = p->ptrs;
	}
	return 0;
}

static void info_proto_free(struct info_proto *p)
{
	free(p->entries);
	free(p->ptrs);
}

static void fail_oom(void *call)
{
	struct status st;
	status_set(&st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
	rpc_call_fail(call, &st);
}

/* Replies with mounts in a Prepare, View or Mounts response (same layout). */
static void reply_mounts(void *call, const ProtobufCMessageDescriptor *desc, const struct mount_spec *specs,
			 size_t n)
{
	Mount *mounts = calloc(n, sizeof(*mounts));
	Mount **ptrs = calloc(n, sizeof(*ptrs));
	if (n && (!mounts || !ptrs)) {
		free(mounts);
		free(ptrs);
		fail_oom(call);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		Mount m = CONTAINERD__TYPES__MOUNT__INIT;
		m.type = specs[i].type;
		m.source = specs[i].source;
		m.n_options = specs[i].n_options;
		m.options = specs[i].options;
		mounts[i] = m;
		ptrs[i] = &mounts[i];
	}
	V1(MountsResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__MOUNTS_RESPONSE__INIT;
	resp.base.descriptor = desc;
	resp.n_mounts = n;
	resp.mounts = ptrs;
	rpc_call_reply(call, &resp.base);
	free(mounts);
	free(ptrs);
}

static void reply_empty(void *call)
{
	Empty e = GOOGLE__PROTOBUF__EMPTY__INIT;
	rpc_call_reply(call, &e.base);
}

/* ---- calls ---- */

static int require_key(const char *key, const char *what, struct status *st)
{
	if (key && *key)
		return 0;
	status_set(st, GRPC_INVALID_ARGUMENT, "%s must not be empty", what);
	return -1;
}

/* Mounts of an existing active or view snapshot, mounting it first in self mode. */
static int mounts_of(struct shim *sh, const struct snap_info *info, struct mount_spec **specs, size_t *n,
		     struct status *st)
{
	int64_t *parents;
	size_t n_parents;
	if (store_parent_ids(sh->store, info->id, &parents, &n_parents, st) < 0)
		return -1;
	int r = 0;
	if (snapdirs_needs_self_mount(sh, info, n_parents))
		r = snapdirs_self_mount(sh, info, parents, n_parents, st);
	if (r == 0)
		r = snapdirs_mounts(sh, info, parents, n_parents, specs, n, st);
	free(parents);
	return r;
}

static void create_snapshot(struct shim *sh, enum snap_kind kind, const char *key, const char *parent,
			    size_t n_labels, void *const *label_entries,
			    const ProtobufCMessageDescriptor *reply_desc, void *call)
{
	struct status st = { 0 };
	struct labels labels;
	if (require_key(key, "key", &st) < 0 || labels_from_entries(n_labels, label_entries, &labels, &st) < 0) {
		rpc_call_fail(call, &st);
		return;
	}
	struct snap_info info = { 0 };
	struct mount_spec *specs = NULL;
	size_t n_specs = 0;
	char tmp[64] = "";
	int64_t id = 0, parent_id = 0;
	bool installed = false;
	if (store_begin(sh->store, true, &st) < 0)
		goto fail;
	if (store_create(sh->store, kind, key, parent, &labels, &id, &st) < 0 ||
	    store_get(sh->store, key, &info, &st) < 0)
		goto fail;
	int64_t *parents;
	size_t n_parents;
	if (store_parent_ids(sh->store, id, &parents, &n_parents, &st) < 0)
		goto fail;
	parent_id = n_parents ? parents[0] : 0;
	free(parents);
	if (snapdirs_prepare(sh, kind, parent_id, tmp, sizeof(tmp), &st) < 0)
		goto fail;
	if (snapdirs_install(sh, tmp, id, &st) < 0)
		goto fail;
	installed = true;
	if (mounts_of(sh, &info, &specs, &n_specs, &st) < 0 || store_commit(sh->store, &st) < 0)
		goto fail;
	reply_mounts(call, reply_desc, specs, n_specs);
	goto out;
fail:
	store_rollback(sh->store);
	if (installed) {
		snapdirs_self_unmount(sh, id, &(struct status){ 0 });
		snapdirs_remove(sh, id);
	} else if (*tmp) {
		snapdirs_discard(sh, tmp);
	}
	rpc_call_fail(call, &st);
out:
	mount_specs_free(specs, n_specs);
	snap_info_free(&info);
	labels_free(&labels);
}

static void do_prepare(V1(Snapshots_Service) *service, const V1(PrepareSnapshotRequest) *in,
		       V1(PrepareSnapshotResponse_Closure) closure, void *call)
{
	create_snapshot(shim_of(service), KIND_ACTIVE, in->key, in->parent, in->n_labels, (void *const *)in->labels,
			&containerd__services__snapshots__v1__prepare_snapshot_response__descriptor, call);
}

static void do_view(V1(Snapshots_Service) *service, const V1(ViewSnapshotRequest) *in,
		    V1(ViewSnapshotResponse_Closure) closure, void *call)
{
	create_snapshot(shim_of(service), KIND_VIEW, in->key, in->parent, in->n_labels, (void *const *)in->labels,
			&containerd__services__snapshots__v1__view_snapshot_response__descriptor, call);
}

static void do_mounts(V1(Snapshots_Service) *service, const V1(MountsRequest) *in,
		      V1(MountsResponse_Closure) closure, void *call)
{
	struct shim *sh = shim_of(service);
	struct status st = { 0 };
	struct snap_info info = { 0 };
	struct mount_spec *specs = NULL;
	size_t n = 0;
	if (store_begin(sh->store, false, &st) < 0 || store_get(sh->store, in->key, &info, &st) < 0)
		goto fail;
	if (info.kind != KIND_ACTIVE && info.kind != KIND_VIEW) {
		status_set(&st, GRPC_FAILED_PRECONDITION, "snapshot %s is not active or view", in->key);
		goto fail;
	}
	if (mounts_of(sh, &info, &specs, &n, &st) < 0)
		goto fail;
	store_rollback(sh->store);
	reply_mounts(call, &containerd__services__snapshots__v1__mounts_response__descriptor, specs, n);
	goto out;
fail:
	store_rollback(sh->store);
	rpc_call_fail(call, &st);
out:
	mount_specs_free(specs, n);
	snap_info_free(&info);
}

static void do_commit(V1(Snapshots_Service) *service, const V1(CommitSnapshotRequest) *in,
		      Google__Protobuf__Empty_Closure closure, void *call)
{
	struct shim *sh = shim_of(service);
	struct status st = { 0 };
	struct labels labels = { 0 };
	struct snap_info info = { 0 };
	int64_t size, inodes;
	if (require_key(in->name, "name", &st) < 0 ||
	    labels_from_entries(in->n_labels, (void *const *)in->labels, &labels, &st) < 0) {
		rpc_call_fail(call, &st);
		return;
	}
	if (store_begin(sh->store, true, &st) < 0 || store_get(sh->store, in->key, &info, &st) < 0)
		goto fail;
	/* The upper must be quiet while it is measured and from then on. */
	if (info.kind == KIND_ACTIVE && snapdirs_self_unmount(sh, info.id, &st) < 0)
		goto fail;
	if (snapdirs_usage(sh, info.id, &size, &inodes, &st) < 0 ||
	    store_commit_active(sh->store, in->key, in->name, &labels, size, inodes, &st) < 0 ||
	    store_commit(sh->store, &st) < 0)
		goto fail;
	reply_empty(call);
	goto out;
fail:
	store_rollback(sh->store);
	rpc_call_fail(call, &st);
out:
	snap_info_free(&info);
	labels_free(&labels);
}

static void do_remove(V1(Snapshots_Service) *service, const V1(RemoveSnapshotRequest) *in,
		      Google__Protobuf__Empty_Closure closure, void *call)
{
	struct shim *sh = shim_of(service);
	struct status st = { 0 };
	int64_t id;
	enum snap_kind kind;
	if (store_begin(sh->store, true, &st) < 0 || store_remove(sh->store, in->key, &id, &kind, &st) < 0 ||
	    snapdirs_self_unmount(sh, id, &st) < 0 || store_commit(sh->store, &st) < 0) {
		store_rollback(sh->store);
		rpc_call_fail(call, &st);
		return;
	}
	/* The key is gone; a directory that cannot be removed now is Cleanup's. */
	snapdirs_remove(sh, id);
	reply_empty(call);
}

static void reply_info(void *call, const ProtobufCMessageDescriptor *desc, const struct snap_info *info)
{
	struct info_proto p;
	if (info_proto_init(&p, info) < 0) {
		info_proto_free(&p);
		fail_oom(call);
		return;
	}
	V1(StatSnapshotResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__STAT_SNAPSHOT_RESPONSE__INIT;
	resp.base.descriptor = desc; /* Stat and Update responses have the same layout */
	resp.info = &p.info;
	rpc_call_reply(call, &resp.base);
	info_proto_free(&p);
}

static void do_stat(V1(Snapshots_Service) *service, const V1(StatSnapshotRequest) *in,
		    V1(StatSnapshotResponse_Closure) closure, void *call)
{
	struct shim *sh = shim_of(service);
	struct status st = { 0 };
	struct snap_info info = { 0 };
	if (store_begin(sh->store, false, &st) < 0 || store_get(sh->store, in->key, &info, &st) < 0) {
		store_rollback(sh->store);
		rpc_call_fail(call, &st);
		return;
	}
	store_rollback(sh->store);
	reply_info(call, &containerd__services__snapshots__v1__stat_snapshot_response__descriptor, &info);
	snap_info_free(&info);
}

/* The labels after an update: field paths "labels" and "labels.KEY" only. */
static int updated_labels(const V1(UpdateSnapshotRequest) *in, struct labels *have, struct status *st)
{
	struct labels given;
	if (labels_from_entries(in->info->n_labels, (void *const *)in->info->labels, &given, st) < 0)
		return -1;
	size_t n_paths = in->update_mask ? in->update_mask->n_paths : 0;
	int ret = 0;
	if (n_paths == 0) {
		labels_free(have);
		*have = given;
		return 0;
	}
	for (size_t i = 0; i < n_paths && ret == 0; i++) {
		const char *path = in->update_mask->paths[i];
		if (strncmp(path, "labels.", 7) == 0) {
			if (labels_set(have, path + 7, labels_get(&given, path + 7)) < 0) {
				status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
				ret = -1;
			}
		} else if (strcmp(path, "labels") == 0) {
			labels_free(have);
			*have = given;
			given = (struct labels){ 0 };
		} else {
			status_set(st, GRPC_INVALID_ARGUMENT, "cannot update %s field on snapshot %s", path,
				   in->info->name);
			ret = -1;
		}
	}
	labels_free(&given);
	return ret;
}

static void do_update(V1(Snapshots_Service) *service, const V1(UpdateSnapshotRequest) *in,
		      V1(UpdateSnapshotResponse_Closure) closure, void *call)
{
	struct shim *sh = shim_of(service);
	struct status st = { 0 };
	struct snap_info info = { 0 };
	if (!in->info || require_key(in->info->name, "info.name", &st) < 0) {
		if (!in->info)
			status_set(&st, GRPC_INVALID_ARGUMENT, "info must be given");
		rpc_call_fail(call, &st);
		return;
	}
	if (store_begin(sh->store, true, &st) < 0 || store_get(sh->store, in->info->name, &info, &st) < 0 ||
	    updated_labels(in, &info.labels, &st) < 0 || store_set_labels(sh->store, info.id, &info.labels, &st) < 0)
		goto fail;
	snap_info_free(&info);
	if (store_get(sh->store, in->info->name, &info, &st) < 0 || store_commit(sh->store, &st) < 0)
		goto fail;
	reply_info(call, &containerd__services__snapshots__v1__update_snapshot_response__descriptor, &info);
	snap_info_free(&info);
	return;
fail:
	store_rollback(sh->store);
	snap_info_free(&info);
	rpc_call_fail(call, &st);
}

/* As containerd's service: the stream carries infos in messages of at most 100. */
#define LIST_BATCH 100

struct list_state {
	void *call;
	struct filter **filters;
	size_t n_filters;
	struct info_proto batch[LIST_BATCH];
	struct snap_info infos[LIST_BATCH];
	size_t n;
};

static int list_flush(struct list_state *ls)
{
	if (!ls->n)
		return 0;
	V1(Info) *ptrs[LIST_BATCH];
	int ret = 0;
	for (size_t i = 0; i < ls->n; i++) {
		if (info_proto_init(&ls->batch[i], &ls->infos[i]) < 0)
			ret = -1;
		ptrs[i] = &ls->batch[i].info;
	}
	V1(ListSnapshotsResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
	resp.n_info = ls->n;
	resp.info = ptrs;
	if (ret == 0)
		rpc_call_reply(ls->call, &resp.base);
	for (size_t i = 0; i < ls->n; i++) {
		info_proto_free(&ls->batch[i]);
		snap_info_free(&ls->infos[i]);
	}
	ls->n = 0;
	return ret;
}

static int list_one(struct snap_info *info, void *arg)
{
	struct list_state *ls = arg;
	bool match = ls->n_filters == 0;
	for (size_t i = 0; i < ls->n_filters && !match; i++)
		match = filter_match(ls->filters[i], info);
	if (!match)
		return 0;
	ls->infos[ls->n++] = *info;
	*info = (struct snap_info){ 0 };
	return ls->n == LIST_BATCH ? list_flush(ls) : 0;
}

static void do_list(V1(Snapshots_Service) *service, const V1(ListSnapshotsRequest) *in,
		    V1(ListSnapshotsResponse_Closure) closure, void *call)
{
	struct shim *sh = shim_of(service);
	struct status st = { 0 };
	struct list_state *ls = calloc(1, sizeof(*ls));
	if (!ls) {
		fail_oom(call);
		return;
	}
	ls->call = call;
	ls->filters = calloc(in->n_filters ? in->n_filters : 1, sizeof(*ls->filters));
	if (!ls->filters) {
		free(ls);
		fail_oom(call);
		return;
	}
	int r = 0;
	for (size_t i = 0; i < in->n_filters && r == 0; i++) {
		r = filter_parse(in->filters[i], &ls->filters[i], &st);
		if (r == 0)
			ls->n_filters++;
	}
	if (r == 0 && store_begin(sh->store, false, &st) == 0) {
		r = store_walk(sh->store, list_one, ls, &st);
		store_rollback(sh->store);
		if (r < 0 && st.code == GRPC_OK)
			status_set(&st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
		if (r == 0 && list_flush(ls) < 0) {
			status_set(&st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
			r = -1;
		}
	} else {
		r = -1;
	}
	if (r < 0)
		rpc_call_fail(call, &st);
	for (size_t i = 0; i < ls->n; i++)
		snap_info_free(&ls->infos[i]);
	for (size_t i = 0; i < ls->n_filters; i++)
		filter_free(ls->filters[i]);
	free(ls->filters);
	free(ls);
}

static void do_usage(V1(Snapshots_Service) *service, const V1(UsageRequest) *in,
		     V1(UsageResponse_Closure) closure, void *call)
{
	struct shim *sh = shim_of(service);
	struct status st = { 0 };
	struct snap_info info = { 0 };
	int r = store_begin(sh->store, false, &st) < 0 ? -1 : store_get(sh->store, in->key, &info, &st);
	store_rollback(sh->store);
	/* live for an active snapshot, as stored at commit otherwise */
	if (r == 0 && info.kind == KIND_ACTIVE)
		r = snapdirs_usage(sh, info.id, &info.size, &info.inodes, &st);
	if (r < 0) {
		rpc_call_fail(call, &st);
	} else {
		V1(UsageResponse) resp = CONTAINERD__SERVICES__SNAPSHOTS__V1__USAGE_RESPONSE__INIT;
		resp.size = info.size;
		resp.inodes = info.inodes;
		rpc_call_reply(call, &resp.base);
	}
	snap_info_free(&info);
}

static void do_cleanup(V1(Snapshots_Service) *service, const V1(CleanupRequest) *in,
		       Google__Protobuf__Empty_Closure closure, void *call)
{
	struct shim *sh = shim_of(service);
	struct status st = { 0 };
	if (store_begin(sh->store, true, &st) < 0 || snapdirs_cleanup(sh, &st) < 0) {
		store_rollback(sh->store);
		rpc_call_fail(call, &st);
		return;
	}
	store_rollback(sh->store);
	reply_empty(call);
}

struct snapshots_service {
	V1(Snapshots_Service) base;
	struct shim *sh;
};

static struct snapshots_service the_service = {
	.base = CONTAINERD__SERVICES__SNAPSHOTS__V1__SNAPSHOTS__INIT(do_),
};

static struct shim *shim_of(void *service)
{
	return ((struct snapshots_service *)service)->sh;
}

ProtobufCService *snapshots_service(struct shim *sh)
{
	the_service.sh = sh;
	return &the_service.base.base;
}
