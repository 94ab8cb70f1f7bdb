/* The main() of every Check program in tests/unit: a program builds its
 * suite in suite() and ends with CHECK_MAIN(suite); it runs every case (or
 * the ones CK_RUN_SUITE/CK_RUN_CASE name) and exits 1 when a test failed. */
#ifndef TESTS_UNIT_CHECK_MAIN_H
#define TESTS_UNIT_CHECK_MAIN_H

#include <check.h>

static inline int check_run(Suite *s)
{
	SRunner *r = srunner_create(s);
	srunner_run_all(r, CK_NORMAL);
	int failed = srunner_ntests_failed(r);
	srunner_free(r);
	return failed ? 1 : 0;
}

#define CHECK_MAIN(suite_fn)                 \
	int main(void)                       \
	{                                    \
		return check_run(suite_fn()); \
	}

#endif
