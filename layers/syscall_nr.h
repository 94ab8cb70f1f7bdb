/* Numbers of syscalls newer than some libcs' and libseccomps' tables: the
 * same on every architecture since Linux 5.x (the unified syscall table). */
#ifndef OVL_SYSCALL_NR_H
#define OVL_SYSCALL_NR_H

#include <sys/syscall.h>

#ifndef SYS_fchmodat2
#define SYS_fchmodat2 452
#endif
#ifndef SYS_setxattrat
#define SYS_setxattrat 463
#endif
#ifndef SYS_getxattrat
#define SYS_getxattrat 464
#endif
#ifndef SYS_listxattrat
#define SYS_listxattrat 465
#endif
#ifndef SYS_removexattrat
#define SYS_removexattrat 466
#endif

#endif
