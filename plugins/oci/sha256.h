/* SHA-256 (FIPS 180-4), for the digests of OCI blobs: a plain C
 * implementation, and the x86 SHA extensions where the CPU has them. */
#ifndef OCI_SHA256_H
#define OCI_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sha256 {
	uint32_t h[8];
	uint64_t len;          /* bytes hashed */
	unsigned char buf[64]; /* a partial block */
	size_t fill;
	int ni;                /* the SHA extensions are used */
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t n);
void sha256_final(struct sha256 *s, unsigned char out[32]);
/* out: 64 lowercase hex digits and a NUL. */
void sha256_hex(const unsigned char digest[32], char out[65]);
/* After init: the portable block function, for tests of the accelerated one. */
void sha256_force_portable(struct sha256 *s);
/* Whether init chooses the SHA extensions on this CPU. */
int sha256_accelerated(void);

#endif
