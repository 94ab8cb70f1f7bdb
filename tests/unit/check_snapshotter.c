/* Unit tests of the snapshotter shim's pure parts: containerd's filter
 * syntax evaluated on snapshot infos, labels, and id-mapping labels. */
#include "config.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../../contrib/snapshotter/shim.h"
#include "check_main.h"

static struct snap_info make_info(const char *name, const char *parent, enum snap_kind kind)
{
	struct snap_info i = { 0 };
	i.name = strdup(name);
	i.parent = strdup(parent);
	i.kind = kind;
	return i;
}

/* Whether filter TEXT parses and matches INFO; -1 when it does not parse. */
static int matches(const char *text, const struct snap_info *info)
{
	struct filter *f;
	struct status st = { 0 };
	if (filter_parse(text, &f, &st) < 0) {
		ck_assert_int_eq(st.code, GRPC_INVALID_ARGUMENT);
		ck_assert(strstr(st.message, "filter") != NULL);
		return -1;
	}
	int m = filter_match(f, info);
	filter_free(f);
	return m;
}

START_TEST(filter_fields)
{
	struct snap_info a = make_info("default/1/sha256:abc", "", KIND_COMMITTED);
	struct snap_info b = make_info("b", "default/1/sha256:abc", KIND_ACTIVE);
	ck_assert_int_eq(matches("", &a), 1);
	ck_assert_int_eq(matches("name==b", &b), 1);
	ck_assert_int_eq(matches("name==b", &a), 0);
	ck_assert_int_eq(matches("name==\"default/1/sha256:abc\"", &a), 1);
	ck_assert_int_eq(matches("parent==\"default/1/sha256:abc\"", &b), 1);
	ck_assert_int_eq(matches("parent!=\"\"", &b), 1);
	ck_assert_int_eq(matches("parent!=\"\"", &a), 0);
	ck_assert_int_eq(matches("parent", &a), 1); /* present, if empty */
	ck_assert_int_eq(matches("kind==committed", &a), 1);
	ck_assert_int_eq(matches("kind==active", &a), 0);
	ck_assert_int_eq(matches("kind==active", &b), 1);
	ck_assert_int_eq(matches("kind==active,name==b", &b), 1);
	ck_assert_int_eq(matches("kind==active , name==a", &b), 0);
	ck_assert_int_eq(matches("unknownfield", &b), 0);
	ck_assert_int_eq(matches("unknownfield!=x", &b), 1); /* absent compares as "" */
	snap_info_free(&a);
	snap_info_free(&b);
}
END_TEST

START_TEST(filter_labels)
{
	struct snap_info a = make_info("a", "", KIND_VIEW);
	ck_assert_int_eq(matches("labels.foo", &a), 0); /* no labels: not present */
	labels_set(&a.labels, "containerd.io/gc.root", "2024");
	labels_set(&a.labels, "foo", "bar baz");
	ck_assert_int_eq(matches("labels.\"containerd.io/gc.root\"", &a), 1);
	ck_assert_int_eq(matches("labels.\"containerd.io/gc.root\"==2024", &a), 1);
	ck_assert_int_eq(matches("labels.foo==\"bar baz\"", &a), 1);
	ck_assert_int_eq(matches("labels.foo!=\"bar baz\"", &a), 0);
	ck_assert_int_eq(matches("labels.foo", &a), 1);
	ck_assert_int_eq(matches("labels.nope", &a), 0);
	ck_assert_int_eq(matches("labels.foo~=^bar", &a), 1);
	ck_assert_int_eq(matches("labels.foo~=/ba[rz] baz$/", &a), 1);
	ck_assert_int_eq(matches("labels.foo~=|^baz|", &a), 0);
	ck_assert_int_eq(matches("labels.foo~=\"(\"", &a), 0); /* a bad regex matches nothing */
	ck_assert_int_eq(matches("labels.\"a\\x2eb\"", &a), 0);
	labels_set(&a.labels, "a.b", "1");
	ck_assert_int_eq(matches("labels.\"a\\x2eb\"==1", &a), 1);
	ck_assert_int_eq(matches("labels.a.b==1", &a), 1); /* fields join with '.' */
	snap_info_free(&a);
}
END_TEST

START_TEST(filter_syntax_errors)
{
	struct snap_info a = make_info("a", "", KIND_VIEW);
	ck_assert_int_eq(matches("name==", &a), -1);
	ck_assert_int_eq(matches("name=a", &a), -1);
	ck_assert_int_eq(matches("name===a", &a), -1);
	ck_assert_int_eq(matches("name==a,", &a), -1);
	ck_assert_int_eq(matches(",name==a", &a), -1);
	ck_assert_int_eq(matches("name==\"a", &a), -1);
	ck_assert_int_eq(matches("name==a b", &a), -1);
	ck_assert_int_eq(matches("-name", &a), -1);
	ck_assert_int_eq(matches("name==/a/", &a), -1); /* alternative quotes only for ~= */
	ck_assert_int_eq(matches("name==\"\\q\"", &a), -1);
	ck_assert_int_eq(matches("name==\"a\"", &a), 1);
	snap_info_free(&a);
}
END_TEST

START_TEST(labels_set_get_remove)
{
	struct labels l = { 0 };
	struct status st = { 0 };
	ck_assert_int_eq(labels_set(&l, "a", "1"), 0);
	ck_assert_int_eq(labels_set(&l, "b", "2"), 0);
	ck_assert_int_eq(labels_set(&l, "a", "3"), 0);
	ck_assert_uint_eq(l.n, 2);
	ck_assert_str_eq(labels_get(&l, "a"), "3");
	ck_assert_int_eq(labels_set(&l, "a", ""), 0); /* an empty value removes */
	ck_assert_ptr_null(labels_get(&l, "a"));
	ck_assert_str_eq(labels_get(&l, "b"), "2");
	ck_assert_int_eq(labels_set(&l, "zz", NULL), 0);
	ck_assert_uint_eq(l.n, 1);
	ck_assert_int_eq(labels_validate(&l, &st), 0);
	char *big = malloc(4100);
	memset(big, 'v', 4099);
	big[4099] = '\0';
	ck_assert_int_eq(labels_set(&l, "k", big), 0);
	ck_assert_int_eq(labels_validate(&l, &st), -1);
	ck_assert_int_eq(st.code, GRPC_INVALID_ARGUMENT);
	free(big);
	labels_free(&l);
	ck_assert_uint_eq(l.n, 0);
}
END_TEST

/* The message of an id-mapping label VALUE, "" when it is a whole map. */
static const char *idmap_error(const char *value)
{
	static struct status st;
	st = (struct status){ 0 };
	if (idmap_validate(LABEL_UIDMAPPING, value, &st) == 0)
		return "";
	ck_assert_int_eq(st.code, GRPC_INVALID_ARGUMENT);
	ck_assert(strstr(st.message, LABEL_UIDMAPPING) != NULL);
	return st.message;
}

START_TEST(idmap_labels)
{
	/* one range, several (containerd 2 joins them with ','), the whole id space */
	ck_assert_str_eq(idmap_error("0:100000:65536"), "");
	ck_assert_str_eq(idmap_error("0:1000:1,1:100000:65536"), "");
	ck_assert_str_eq(idmap_error("0:0:4294967295"), "");
	ck_assert_str_eq(idmap_error("1:0:4294967295"), "");
	ck_assert_str_eq(idmap_error("0:10:10,10:0:10"), ""); /* adjacent, crossed: fine */
	/* not a map */
	static const char *bad[] = { "", "0", "0:1", "0:1:", "0:1:2,", ",0:1:2", "0:1:2:3", "a:1:2", "-1:1:2",
				     "+1:1:2", " 0:1:2", "0:1:2 ", "0::2", "0:1:4294967296", "4294967296:0:1",
				     "0;1;2", "0:1:2,,3:4:5" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++)
		ck_assert_msg(strstr(idmap_error(bad[i]), "not CTR:HOST:SIZE") != NULL, "'%s' accepted", bad[i]);
	/* empty, overflowing, overlapping */
	ck_assert(strstr(idmap_error("0:1:0"), "is empty") != NULL);
	ck_assert(strstr(idmap_error("4294967295:0:2"), "past id 4294967295") != NULL);
	ck_assert(strstr(idmap_error("0:4294967000:1000"), "past id 4294967295") != NULL);
	ck_assert(strstr(idmap_error("0:100:10,9:200:1"), "overlaps range 1 on the container side") != NULL);
	ck_assert(strstr(idmap_error("0:100:10,20:109:5"), "overlaps range 1 on the host side") != NULL);
	ck_assert(strstr(idmap_error("0:100:1,5:200:2,6:300:1"), "range 3 overlaps range 2") != NULL);
	/* other labels are not maps */
	struct status st = { 0 };
	ck_assert_int_eq(idmap_validate("containerd.io/snapshot/other", "x", &st), 0);
	/* labels_validate applies it to both labels */
	struct labels l = { 0 };
	ck_assert_int_eq(labels_set(&l, LABEL_GIDMAPPING, "0:1:2,1:5:1"), 0);
	ck_assert_int_eq(labels_validate(&l, &st), -1);
	ck_assert(strstr(st.message, LABEL_GIDMAPPING) != NULL);
	ck_assert(idmap_labelled(&l));
	labels_free(&l);
	ck_assert(!idmap_labelled(&l));
	/* the fuse-overlayfs option joins the triples with ':' */
	char *opt = idmap_option("uidmapping", "0:1000:1,1:100000:65536");
	ck_assert_str_eq(opt, "uidmapping=0:1000:1:1:100000:65536");
	free(opt);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("snapshotter");
	TCase *t = tcase_create("filters");
	tcase_add_test(t, filter_fields);
	tcase_add_test(t, filter_labels);
	tcase_add_test(t, filter_syntax_errors);
	suite_add_tcase(s, t);
	t = tcase_create("labels");
	tcase_add_test(t, labels_set_get_remove);
	tcase_add_test(t, idmap_labels);
	suite_add_tcase(s, t);
	return s;
}

CHECK_MAIN(suite)
