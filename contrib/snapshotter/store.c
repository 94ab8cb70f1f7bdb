/* Snapshot metadata in SQLite: WAL, synchronous commits, one transaction per
 * call, parents as foreign keys.  Ids are never reused (AUTOINCREMENT), so a
 * directory left by a crash can never be mistaken for a new snapshot's. */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>

#include "shim.h"

enum stmt_id {
	ST_GET,
	ST_LABELS,
	ST_PARENT_OF,
	ST_INSERT,
	ST_INSERT_LABEL,
	ST_DELETE_LABELS,
	ST_COMMIT,
	ST_HAS_CHILD,
	ST_DELETE,
	ST_TOUCH,
	ST_WALK,
	ST_HAS_ID,
	ST_ALL_LABELS,
	ST_COUNT
};

static const char *const stmt_sql[ST_COUNT] = {
	[ST_GET] = "SELECT s.id, s.name, coalesce(p.name, ''), s.kind, s.created_s, s.created_ns,"
		   " s.updated_s, s.updated_ns, s.size, s.inodes"
		   " FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id WHERE s.name = ?1",
	[ST_LABELS] = "SELECT key, value FROM labels WHERE snapshot_id = ?1 ORDER BY key",
	[ST_PARENT_OF] = "SELECT parent_id FROM snapshots WHERE id = ?1",
	[ST_INSERT] = "INSERT INTO snapshots(name, parent_id, kind, created_s, created_ns, updated_s,"
		      " updated_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?4, ?5)",
	[ST_INSERT_LABEL] = "INSERT INTO labels(snapshot_id, key, value) VALUES (?1, ?2, ?3)",
	[ST_DELETE_LABELS] = "DELETE FROM labels WHERE snapshot_id = ?1",
	[ST_COMMIT] = "UPDATE snapshots SET name = ?2, kind = 3, created_s = ?3, created_ns = ?4,"
		      " updated_s = ?3, updated_ns = ?4, size = ?5, inodes = ?6 WHERE id = ?1",
	[ST_HAS_CHILD] = "SELECT 1 FROM snapshots WHERE parent_id = ?1 LIMIT 1",
	[ST_DELETE] = "DELETE FROM snapshots WHERE id = ?1",
	[ST_TOUCH] = "UPDATE snapshots SET updated_s = ?2, updated_ns = ?3 WHERE id = ?1",
	[ST_WALK] = "SELECT s.id, s.name, coalesce(p.name, ''), s.kind, s.created_s, s.created_ns,"
		    " s.updated_s, s.updated_ns, s.size, s.inodes"
		    " FROM snapshots s LEFT JOIN snapshots p ON p.id = s.parent_id ORDER BY s.name",
	[ST_HAS_ID] = "SELECT 1 FROM snapshots WHERE id = ?1",
	[ST_ALL_LABELS] = "SELECT snapshot_id, key, value FROM labels ORDER BY snapshot_id, key",
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS snapshots ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" name TEXT NOT NULL UNIQUE,"
	" parent_id INTEGER REFERENCES snapshots(id),"
	" kind INTEGER NOT NULL CHECK (kind IN (1, 2, 3)),"
	" created_s INTEGER NOT NULL, created_ns INTEGER NOT NULL,"
	" updated_s INTEGER NOT NULL, updated_ns INTEGER NOT NULL,"
	" size INTEGER NOT NULL DEFAULT 0, inodes INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX IF NOT EXISTS snapshots_by_parent ON snapshots(parent_id);"
	"CREATE TABLE IF NOT EXISTS labels ("
	" snapshot_id INTEGER NOT NULL REFERENCES snapshots(id) ON DELETE CASCADE,"
	" key TEXT NOT NULL, value TEXT NOT NULL,"
	" PRIMARY KEY (snapshot_id, key)) WITHOUT ROWID;";

struct store {
	sqlite3 *db;
	sqlite3_stmt *stmts[ST_COUNT];
	bool in_tx;
};

static int db_fail(struct store *s, struct status *st, const char *what)
{
	int ext = sqlite3_extended_errcode(s->db);
	enum grpc_code code = GRPC_UNKNOWN;
	if (ext == SQLITE_FULL)
		code = GRPC_RESOURCE_EXHAUSTED;
	status_set(st, code, "metadata: %s: %s", what, sqlite3_errmsg(s->db));
	return -1;
}

static sqlite3_stmt *stmt(struct store *s, enum stmt_id id, struct status *st)
{
	sqlite3_stmt *q = s->stmts[id];
	if (!q) {
		if (sqlite3_prepare_v3(s->db, stmt_sql[id], -1, SQLITE_PREPARE_PERSISTENT, &q, NULL) != SQLITE_OK) {
			db_fail(s, st, "prepare");
			return NULL;
		}
		s->stmts[id] = q;
	}
	sqlite3_reset(q);
	sqlite3_clear_bindings(q);
	return q;
}

/* Runs a statement that returns no rows. */
static int exec_done(struct store *s, sqlite3_stmt *q, struct status *st, const char *what)
{
	int rc = sqlite3_step(q);
	sqlite3_reset(q);
	if (rc != SQLITE_DONE)
		return db_fail(s, st, what);
	return 0;
}

int store_open(struct store **out, const char *path, struct status *st)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s) {
		status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return -1;
	}
	if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		status_set(st, GRPC_UNKNOWN, "%s: %s", path, s->db ? sqlite3_errmsg(s->db) : "cannot open");
		store_close(s);
		return -1;
	}
	/* A killed shim leaves the database consistent: WAL, and commits that reach the disk
	 * before the directories they describe are removed. */
	char *err = NULL;
	if (sqlite3_exec(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
			 NULL, NULL, &err) != SQLITE_OK ||
	    sqlite3_exec(s->db, schema, NULL, NULL, &err) != SQLITE_OK) {
		status_set(st, GRPC_UNKNOWN, "%s: %s", path, err ? err : "cannot set up");
		sqlite3_free(err);
		store_close(s);
		return -1;
	}
	sqlite3_busy_timeout(s->db, 5000);
	*out = s;
	return 0;
}

void store_close(struct store *s)
{
	if (!s)
		return;
	for (int i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(s->stmts[i]);
	sqlite3_close(s->db);
	free(s);
}

int store_begin(struct store *s, bool write, struct status *st)
{
	if (sqlite3_exec(s->db, write ? "BEGIN IMMEDIATE" : "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		return db_fail(s, st, "begin");
	s->in_tx = true;
	return 0;
}

int store_commit(struct store *s, struct status *st)
{
	if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		db_fail(s, st, "commit");
		store_rollback(s);
		return -1;
	}
	s->in_tx = false;
	return 0;
}

void store_rollback(struct store *s)
{
	if (s->in_tx)
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
	s->in_tx = false;
}

void snap_info_free(struct snap_info *info)
{
	free(info->name);
	free(info->parent);
	labels_free(&info->labels);
	*info = (struct snap_info){ 0 };
}

static int read_labels(struct store *s, struct snap_info *info, struct status *st)
{
	sqlite3_stmt *q = stmt(s, ST_LABELS, st);
	if (!q)
		return -1;
	sqlite3_bind_int64(q, 1, info->id);
	int rc;
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (labels_set(&info->labels, (const char *)sqlite3_column_text(q, 0),
			       (const char *)sqlite3_column_text(q, 1)) < 0) {
			sqlite3_reset(q);
			status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
			return -1;
		}
	}
	sqlite3_reset(q);
	return rc == SQLITE_DONE ? 0 : db_fail(s, st, "labels");
}

/* Fills info from a row of ST_GET or ST_WALK. */
static int read_row(struct store *s, sqlite3_stmt *q, struct snap_info *info, struct status *st)
{
	*info = (struct snap_info){ 0 };
	info->id = sqlite3_column_int64(q, 0);
	info->name = strdup((const char *)sqlite3_column_text(q, 1));
	info->parent = strdup((const char *)sqlite3_column_text(q, 2));
	info->kind = (enum snap_kind)sqlite3_column_int(q, 3);
	info->created.tv_sec = sqlite3_column_int64(q, 4);
	info->created.tv_nsec = sqlite3_column_int64(q, 5);
	info->updated.tv_sec = sqlite3_column_int64(q, 6);
	info->updated.tv_nsec = sqlite3_column_int64(q, 7);
	info->size = sqlite3_column_int64(q, 8);
	info->inodes = sqlite3_column_int64(q, 9);
	if (!info->name || !info->parent) {
		snap_info_free(info);
		status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return -1;
	}
	return 0;
}

int store_get(struct store *s, const char *key, struct snap_info *out, struct status *st)
{
	sqlite3_stmt *q = stmt(s, ST_GET, st);
	if (!q)
		return -1;
	sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
	int rc = sqlite3_step(q);
	if (rc == SQLITE_DONE) {
		sqlite3_reset(q);
		status_set(st, GRPC_NOT_FOUND, "snapshot %s: not found", key);
		return -1;
	}
	if (rc != SQLITE_ROW) {
		sqlite3_reset(q);
		return db_fail(s, st, "get");
	}
	int r = read_row(s, q, out, st);
	sqlite3_reset(q);
	if (r < 0)
		return -1;
	if (read_labels(s, out, st) < 0) {
		snap_info_free(out);
		return -1;
	}
	return 0;
}

int store_parent_ids(struct store *s, int64_t id, int64_t **ids, size_t *n, struct status *st)
{
	*ids = NULL;
	*n = 0;
	for (;;) {
		sqlite3_stmt *q = stmt(s, ST_PARENT_OF, st);
		if (!q)
			goto fail;
		sqlite3_bind_int64(q, 1, id);
		int rc = sqlite3_step(q);
		bool has = rc == SQLITE_ROW && sqlite3_column_type(q, 0) != SQLITE_NULL;
		int64_t parent = has ? sqlite3_column_int64(q, 0) : 0;
		sqlite3_reset(q);
		if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
			db_fail(s, st, "parents");
			goto fail;
		}
		if (!has)
			return 0;
		int64_t *p = realloc(*ids, (*n + 1) * sizeof(int64_t));
		if (!p) {
			status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
			goto fail;
		}
		*ids = p;
		(*ids)[(*n)++] = parent;
		id = parent;
	}
fail:
	free(*ids);
	*ids = NULL;
	*n = 0;
	return -1;
}

static int write_labels(struct store *s, int64_t id, const struct labels *labels, struct status *st)
{
	sqlite3_stmt *q = stmt(s, ST_DELETE_LABELS, st);
	if (!q)
		return -1;
	sqlite3_bind_int64(q, 1, id);
	if (exec_done(s, q, st, "labels") < 0)
		return -1;
	for (size_t i = 0; labels && i < labels->n; i++) {
		if (!*labels->values[i])
			continue;
		q = stmt(s, ST_INSERT_LABEL, st);
		if (!q)
			return -1;
		sqlite3_bind_int64(q, 1, id);
		sqlite3_bind_text(q, 2, labels->keys[i], -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, labels->values[i], -1, SQLITE_STATIC);
		if (exec_done(s, q, st, "labels") < 0)
			return -1;
	}
	return 0;
}

static void now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

int store_create(struct store *s, enum snap_kind kind, const char *key, const char *parent,
		 const struct labels *labels, int64_t *id, struct status *st)
{
	int64_t parent_id = 0;
	if (parent && *parent) {
		struct snap_info p;
		if (store_get(s, parent, &p, st) < 0) {
			if (st->code == GRPC_NOT_FOUND)
				status_set(st, GRPC_NOT_FOUND, "parent snapshot %s: not found", parent);
			return -1;
		}
		enum snap_kind pk = p.kind;
		parent_id = p.id;
		snap_info_free(&p);
		if (pk != KIND_COMMITTED) {
			status_set(st, GRPC_INVALID_ARGUMENT, "parent %s is not a committed snapshot", parent);
			return -1;
		}
	}
	sqlite3_stmt *q = stmt(s, ST_INSERT, st);
	if (!q)
		return -1;
	struct timespec t;
	now(&t);
	sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
	if (parent_id)
		sqlite3_bind_int64(q, 2, parent_id);
	sqlite3_bind_int(q, 3, kind);
	sqlite3_bind_int64(q, 4, t.tv_sec);
	sqlite3_bind_int64(q, 5, t.tv_nsec);
	int rc = sqlite3_step(q);
	sqlite3_reset(q);
	if (rc == SQLITE_CONSTRAINT) {
		status_set(st, GRPC_ALREADY_EXISTS, "snapshot %s: already exists", key);
		return -1;
	}
	if (rc != SQLITE_DONE)
		return db_fail(s, st, "create");
	*id = sqlite3_last_insert_rowid(s->db);
	return write_labels(s, *id, labels, st);
}

int store_commit_active(struct store *s, const char *key, const char *name,
			const struct labels *labels, int64_t size, int64_t inodes, struct status *st)
{
	struct snap_info existing;
	if (store_get(s, name, &existing, st) == 0) {
		snap_info_free(&existing);
		status_set(st, GRPC_ALREADY_EXISTS, "committed snapshot %s: already exists", name);
		return -1;
	}
	if (st->code != GRPC_NOT_FOUND)
		return -1;
	struct snap_info active;
	if (store_get(s, key, &active, st) < 0)
		return -1;
	int64_t id = active.id;
	enum snap_kind kind = active.kind;
	snap_info_free(&active);
	if (kind != KIND_ACTIVE) {
		status_set(st, GRPC_FAILED_PRECONDITION, "snapshot %s is not active", key);
		return -1;
	}
	sqlite3_stmt *q = stmt(s, ST_COMMIT, st);
	if (!q)
		return -1;
	struct timespec t;
	now(&t);
	sqlite3_bind_int64(q, 1, id);
	sqlite3_bind_text(q, 2, name, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 3, t.tv_sec);
	sqlite3_bind_int64(q, 4, t.tv_nsec);
	sqlite3_bind_int64(q, 5, size);
	sqlite3_bind_int64(q, 6, inodes);
	if (exec_done(s, q, st, "commit") < 0)
		return -1;
	/* A commit's labels replace the active snapshot's; none are inherited. */
	return write_labels(s, id, labels, st);
}

int store_remove(struct store *s, const char *key, int64_t *id, enum snap_kind *kind, struct status *st)
{
	struct snap_info info;
	if (store_get(s, key, &info, st) < 0)
		return -1;
	*id = info.id;
	*kind = info.kind;
	snap_info_free(&info);
	sqlite3_stmt *q = stmt(s, ST_HAS_CHILD, st);
	if (!q)
		return -1;
	sqlite3_bind_int64(q, 1, *id);
	int rc = sqlite3_step(q);
	sqlite3_reset(q);
	if (rc == SQLITE_ROW) {
		status_set(st, GRPC_FAILED_PRECONDITION, "cannot remove snapshot %s: it has children", key);
		return -1;
	}
	if (rc != SQLITE_DONE)
		return db_fail(s, st, "remove");
	q = stmt(s, ST_DELETE, st);
	if (!q)
		return -1;
	sqlite3_bind_int64(q, 1, *id);
	return exec_done(s, q, st, "remove");
}

int store_set_labels(struct store *s, int64_t id, const struct labels *labels, struct status *st)
{
	sqlite3_stmt *q = stmt(s, ST_TOUCH, st);
	if (!q)
		return -1;
	struct timespec t;
	now(&t);
	sqlite3_bind_int64(q, 1, id);
	sqlite3_bind_int64(q, 2, t.tv_sec);
	sqlite3_bind_int64(q, 3, t.tv_nsec);
	if (exec_done(s, q, st, "update") < 0)
		return -1;
	return write_labels(s, id, labels, st);
}

static int by_id(const void *a, const void *b)
{
	int64_t x = (*(struct snap_info *const *)a)->id, y = (*(struct snap_info *const *)b)->id;
	return x < y ? -1 : x > y;
}

/* The labels of every row in one query rather than one per row. */
static int read_all_labels(struct store *s, struct snap_info *rows, size_t n, struct status *st)
{
	struct snap_info **index = malloc((n ? n : 1) * sizeof(*index));
	sqlite3_stmt *q = index ? stmt(s, ST_ALL_LABELS, st) : NULL;
	if (!q) {
		free(index);
		if (!index)
			status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++)
		index[i] = &rows[i];
	qsort(index, n, sizeof(*index), by_id);
	int rc, ret = 0;
	while (ret == 0 && (rc = sqlite3_step(q)) == SQLITE_ROW) {
		struct snap_info key = { .id = sqlite3_column_int64(q, 0) }, *kp = &key;
		struct snap_info **row = bsearch(&kp, index, n, sizeof(*index), by_id);
		if (row && labels_set(&(*row)->labels, (const char *)sqlite3_column_text(q, 1),
				      (const char *)sqlite3_column_text(q, 2)) < 0) {
			status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
			ret = -1;
		}
	}
	sqlite3_reset(q);
	if (ret == 0 && rc != SQLITE_DONE)
		ret = db_fail(s, st, "labels");
	free(index);
	return ret;
}

int store_walk(struct store *s, store_walk_fn fn, void *arg, struct status *st)
{
	/* Rows are collected first: the callback may query labels with other statements. */
	sqlite3_stmt *q = stmt(s, ST_WALK, st);
	if (!q)
		return -1;
	struct snap_info *rows = NULL;
	size_t n = 0, cap = 0;
	int rc, ret = 0;
	while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			struct snap_info *p = realloc(rows, cap * sizeof(*rows));
			if (!p) {
				status_set(st, GRPC_RESOURCE_EXHAUSTED, "out of memory");
				ret = -1;
				break;
			}
			rows = p;
		}
		if (read_row(s, q, &rows[n], st) < 0) {
			ret = -1;
			break;
		}
		n++;
	}
	sqlite3_reset(q);
	if (ret == 0 && rc != SQLITE_DONE)
		ret = db_fail(s, st, "list");
	if (ret == 0)
		ret = read_all_labels(s, rows, n, st);
	for (size_t i = 0; i < n; i++) {
		if (ret == 0 && fn(&rows[i], arg) < 0)
			ret = -1;
		snap_info_free(&rows[i]);
	}
	free(rows);
	return ret;
}

int store_has_id(struct store *s, int64_t id, bool *has, struct status *st)
{
	sqlite3_stmt *q = stmt(s, ST_HAS_ID, st);
	if (!q)
		return -1;
	sqlite3_bind_int64(q, 1, id);
	int rc = sqlite3_step(q);
	sqlite3_reset(q);
	if (rc != SQLITE_ROW && rc != SQLITE_DONE)
		return db_fail(s, st, "lookup");
	*has = rc == SQLITE_ROW;
	return 0;
}
