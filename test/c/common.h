/* Helpers shared by the C tests of libbus. */
#ifndef BUS_TEST_COMMON_H
#define BUS_TEST_COMMON_H

#define _GNU_SOURCE
#include <bus.h>

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Semaphore indices of the protocol. */
enum { SEM_S, SEM_W, SEM_X, SEM_Q, SEM_N };

static const char *test_name = "?";

#define FAIL(...)                                                          \
	do {                                                               \
		fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, test_name); \
		fprintf(stderr, __VA_ARGS__);                                  \
		fputc('\n', stderr);                                           \
		exit(1);                                                       \
	} while (0)

/* The call must succeed (return 0). */
#define OK(call)                                                           \
	do {                                                               \
		if ((call) != 0)                                           \
			FAIL("%s failed: %s", #call, strerror(errno));     \
	} while (0)

/* The call must return -1 with errno `code`. */
#define FAILS_WITH(call, code)                                             \
	do {                                                               \
		errno = 0;                                                 \
		int ret_ = (call);                                         \
		int err_ = errno;                                          \
		if (ret_ != -1 || err_ != (code))                          \
			FAIL("%s: expected -1/%s, got %d/%s", #call, #code,    \
			     ret_, strerror(err_));                        \
	} while (0)

#define CHECK(cond)                                                        \
	do {                                                               \
		if (!(cond))                                               \
			FAIL("check failed: %s", #cond);                   \
	} while (0)

/* Kills the process (SIGALRM) if it runs longer than `seconds`: a hang
 * fails the test instead of hanging the run. */
static inline void watchdog(unsigned seconds) { alarm(seconds); }

/* Directory for this test's bus files (made by the runner). */
static inline const char *test_dir(void)
{
	const char *dir = getenv("BUS_TEST_DIR");
	if (!dir || !*dir)
		FAIL("BUS_TEST_DIR is not set");
	return dir;
}

/* A pathname in the test directory (static buffer per call site not
 * needed: the caller gets malloc'd memory). */
static inline char *test_path(const char *name)
{
	char *path;
	if (asprintf(&path, "%s/%s", test_dir(), name) < 0)
		FAIL("asprintf");
	return path;
}

/* Records the keys of an open bus, so the runner can check that they are
 * gone from the system once the test has ended. */
static inline void log_keys(const bus_t *bus)
{
	const char *log = getenv("BUS_TEST_KEYLOG");
	FILE *f;
	if (!log || !*log)
		return;
	f = fopen(log, "a");
	if (!f)
		FAIL("open %s: %s", log, strerror(errno));
	fprintf(f, "%ld %ld\n", (long)bus->key_sem, (long)bus->key_shm);
	fclose(f);
}

/* Creates the bus `path` (exclusively) and logs its keys. */
static inline void make_bus(const char *path)
{
	bus_t bus;
	OK(bus_create(path, BUS_EXCL, NULL));
	OK(bus_open(&bus, path, BUS_RDONLY));
	log_keys(&bus);
	OK(bus_close(&bus));
}

/* Current value of semaphore `index` of `bus`. */
static inline int sem_value(const bus_t *bus, int index)
{
	int v = semctl(bus->sem_id, index, GETVAL);
	if (v < 0)
		FAIL("semctl GETVAL: %s", strerror(errno));
	return v;
}

/* Waits until `cond_value(bus)` semaphore `index` satisfies value >= min,
 * checking every millisecond, for at most 10 s. This waits on a state of
 * the bus, not for a guessed duration. */
static inline void await_sem_at_least(const bus_t *bus, int index, int min)
{
	struct timespec nap = {0, 1000000};
	for (int i = 0; i < 10000; i++) {
		if (sem_value(bus, index) >= min)
			return;
		nanosleep(&nap, NULL);
	}
	FAIL("semaphore %d never reached %d", index, min);
}

static inline void await_sem_zero(const bus_t *bus, int index)
{
	struct timespec nap = {0, 1000000};
	for (int i = 0; i < 10000; i++) {
		if (sem_value(bus, index) == 0)
			return;
		nanosleep(&nap, NULL);
	}
	FAIL("semaphore %d never reached 0", index);
}

/* An absolute time `ms` milliseconds from now on `clock`. */
static inline struct timespec in_ms(clockid_t clock, long ms)
{
	struct timespec t;
	clock_gettime(clock, &t);
	t.tv_sec += ms / 1000;
	t.tv_nsec += (ms % 1000) * 1000000L;
	if (t.tv_nsec >= 1000000000L) {
		t.tv_sec++;
		t.tv_nsec -= 1000000000L;
	}
	return t;
}

/* Milliseconds elapsed on the monotonic clock since `start`. */
static inline double ms_since(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec - start->tv_sec) * 1e3 + (now.tv_nsec - start->tv_nsec) / 1e6;
}

/* Waits for child `pid`; fails unless it exited with status 0. */
static inline void reap(pid_t pid, const char *what)
{
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			FAIL("waitpid %s: %s", what, strerror(errno));
	if (WIFSIGNALED(status))
		FAIL("%s killed by signal %d%s", what, WTERMSIG(status),
		     WTERMSIG(status) == SIGALRM ? " (watchdog: hung)" : "");
	if (WEXITSTATUS(status) != 0)
		FAIL("%s exited with %d", what, WEXITSTATUS(status));
}

#endif
