/* overlay/hash.h: the index (open addressing over entry numbers) and the
 * chain (intrusive buckets), as the core's tables use them. */
#include "config.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

#include "../../overlay/hash.h"
#include "check_main.h"

struct names {
	char v[2000][8];
	bool gone[2000];
};

static uint64_t names_hash(const void *ctx, uint32_t i)
{
	const struct names *n = ctx;
	return n->gone[i] ? OVL_INDEX_LEFT_OUT : ovl_hash_bytes(n->v[i], strlen(n->v[i]), 0);
}

static bool names_eq(const void *ctx, uint32_t i, const void *key)
{
	return strcmp(((const struct names *)ctx)->v[i], key) == 0;
}

static uint32_t *slot_of(struct ovl_index *x, struct names *n, const char *name)
{
	return ovl_index_slot(x->slots, x->cap, ovl_hash_bytes(name, strlen(name), 0), names_eq, n, name);
}

START_TEST(index_finds_every_entry_and_leaves_skipped_out)
{
	static struct names n;
	struct ovl_index x = { 0 };
	for (uint32_t i = 0; i < 2000; i++) {
		snprintf(n.v[i], sizeof n.v[i], "e%u", i);
		ck_assert_int_eq(ovl_index_reserve(&x, i + 1, i, 16, names_hash, &n), 0);
		uint32_t *s = slot_of(&x, &n, n.v[i]);
		ck_assert_uint_eq(*s, 0); /* new: the empty slot where it goes */
		*s = i + 1;
	}
	ck_assert_uint_ge(x.cap, 4000); /* half empty at most */
	for (uint32_t i = 0; i < 2000; i++)
		ck_assert_uint_eq(*slot_of(&x, &n, n.v[i]), i + 1);
	ck_assert_uint_eq(*slot_of(&x, &n, "absent"), 0);
	/* a rebuild leaves out what hash_of skips */
	for (uint32_t i = 0; i < 2000; i += 2)
		n.gone[i] = true;
	uint32_t *slots = ovl_index_build(x.cap, 2000, names_hash, &n);
	ck_assert_ptr_nonnull(slots);
	free(x.slots);
	x.slots = slots;
	for (uint32_t i = 0; i < 2000; i++)
		ck_assert_uint_eq(*slot_of(&x, &n, n.v[i]), i % 2 ? i + 1 : 0);
	free(x.slots);
}
END_TEST

struct item {
	uint64_t key;
	struct item *next;
};

static uint64_t item_key(const void *p)
{
	return ((const struct item *)p)->key;
}

#define NEXT offsetof(struct item, next)

static bool chain_has(const struct ovl_chain *c, const struct item *want)
{
	for (struct item *i = ovl_chain_first(c, want->key); i; i = i->next)
		if (i == want)
			return true;
	return false;
}

START_TEST(chain_grows_and_deletes)
{
	static struct item items[5000];
	struct ovl_chain c = { 0 };
	ck_assert_ptr_null(ovl_chain_first(&c, 1));
	for (size_t i = 0; i < 5000; i++) {
		items[i].key = ovl_hash_bytes(&i, sizeof i, 7) | (i % 3 == 0); /* some keys alike in low bits */
		ck_assert_int_eq(ovl_chain_add(&c, &items[i], items[i].key, NEXT, item_key), 0);
	}
	ck_assert_uint_eq(c.count, 5000);
	ck_assert_uint_ge(c.nbuckets, 5000);
	for (size_t i = 0; i < 5000; i++)
		ck_assert(chain_has(&c, &items[i]));
	for (size_t i = 0; i < 5000; i += 3)
		ck_assert(ovl_chain_del(&c, &items[i], items[i].key, NEXT));
	ck_assert(!ovl_chain_del(&c, &items[0], items[0].key, NEXT)); /* not in any more */
	for (size_t i = 0; i < 5000; i++)
		ck_assert(chain_has(&c, &items[i]) == (i % 3 != 0));
	ck_assert_uint_eq(c.count, 5000 - 1667);
	ovl_chain_free(&c);
	ck_assert_ptr_null(ovl_chain_first(&c, 1));
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("hash");
	TCase *tc = tcase_create("hash");
	tcase_add_test(tc, index_finds_every_entry_and_leaves_skipped_out);
	tcase_add_test(tc, chain_grows_and_deletes);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(suite)
