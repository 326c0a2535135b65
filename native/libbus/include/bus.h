/*
 * bus.h: the C interface of bus, a daemonless broadcast bus between the
 * processes of one machine.
 *
 * This library is a drop-in replacement for the original C libbus: same
 * functions, types, constants and struct layout, same files and System V
 * objects on the wire, so programs built against either header run with
 * either library, and talk to each other on one bus.
 *
 * Conventions: functions returning int give 0 on success and -1 with errno
 * set on failure; functions returning a pointer give NULL with errno set.
 * A NULL pointer where an object is required fails with EINVAL.
 */
#ifndef BUS_H
#define BUS_H

#ifndef _DEFAULT_SOURCE
# define _DEFAULT_SOURCE
#endif
#include <sys/types.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
# define BUS_ATTR_(attributes) __attribute__(attributes)
#else
# define BUS_ATTR_(attributes)
#endif
#define BUS_MUST_CHECK_ BUS_ATTR_((__warn_unused_result__))
#if defined(__GNUC__)
# define BUS_RESTRICT_ __restrict__
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 199901L && !defined(__cplusplus)
# define BUS_RESTRICT_ restrict
#else
# define BUS_RESTRICT_
#endif


/* Flags for bus_open. */

/* Open the bus to listen only (the memory is attached read-only). */
#define BUS_RDONLY 1
/* Open the bus to broadcast. */
#define BUS_WRONLY 0
/* Open the bus to broadcast and listen (same as BUS_WRONLY). */
#define BUS_RDWR 0

/* Flags for bus_create. */

/* Fail with EEXIST if the bus file already exists. */
#define BUS_EXCL 2
/* For bus_create: let a signal interrupt writing the bus file (EINTR)
 * rather than resume. Writing a few bytes to a regular file is not
 * interrupted on Linux, so in practice creation always completes. Waits in
 * bus_read, bus_write and bus_poll always resume after a signal: a signal
 * never ends listening or loses a message. */
#define BUS_INTR 4

/* Flags for bus_write and bus_poll. */

/* Fail with EAGAIN instead of blocking. */
#define BUS_NOWAIT 1

/* Size of a bus's shared memory: the longest message plus its NUL, so a
 * message has at most BUS_MEMORY_SIZE - 1 bytes. */
#define BUS_MEMORY_SIZE 2048


/*
 * An open bus. The caller allocates it (it may live on the stack) and
 * bus_open fills it in; treat the fields as read-only.
 */
typedef struct bus {
	/* Key of the bus's semaphore array, as read from the bus file. */
	key_t key_sem;
	/* Key of the bus's shared memory, as read from the bus file. */
	key_t key_shm;
	/* Identifier of the semaphore array. */
	int sem_id;
	/* Where the shared memory is attached in this process. The library
	 * also uses it to find its own state for this bus, so it must not be
	 * changed. Read messages through bus_read or bus_poll, not here. */
	char *message;
	/* Non-zero after bus_poll_start until a bus_poll succeeds, and again
	 * after a bus_poll fails. */
	int first_poll;
} bus_t;


/*
 * Creates a bus at the pathname `file`, or, if `file` is NULL, at a new
 * random pathname in $XDG_RUNTIME_DIR/bus (or /run/bus).
 *
 * flags: BUS_EXCL to fail with EEXIST if `file` exists; without it an
 * existing file is left as it is and the call succeeds. BUS_INTR: see
 * its definition.
 *
 * If `out_file` is not NULL, *out_file receives the pathname of the bus in
 * memory from malloc(3), which the caller releases with free(3).
 *
 * Errors: EEXIST, ENOENT (a missing directory), EACCES, ENOMEM, and those
 * of open(2), write(2), semget(2) and shmget(2).
 */
BUS_MUST_CHECK_
int bus_create(const char *BUS_RESTRICT_ file, int flags, char **BUS_RESTRICT_ out_file);

/*
 * Removes the bus at `file`: its semaphore array, its shared memory and
 * the file. All three are attempted; the first failure is reported.
 *
 * Errors: ENOENT (no such file), EINVAL (not a bus file), EIDRM (an
 * object was already gone), EACCES.
 */
int bus_unlink(const char *file);

/*
 * Opens the bus at `file` into `*bus`.
 *
 * flags: BUS_RDONLY to only listen, BUS_WRONLY or BUS_RDWR to also
 * broadcast. A negative value fails with EINVAL.
 *
 * Errors: ENOENT (no such file), EINVAL (not a bus file, or its objects do
 * not have the size of a bus), EIDRM (the bus was removed), EACCES.
 */
BUS_MUST_CHECK_
int bus_open(bus_t *BUS_RESTRICT_ bus, const char *BUS_RESTRICT_ file, int flags);

/*
 * Closes `*bus`: stops polling if bus_poll_start was called, and detaches
 * the shared memory. The bus itself remains until bus_unlink. Afterwards
 * `bus->message` is NULL; closing again fails with EINVAL.
 *
 * Errors: EINVAL (`bus` is not open).
 */
int bus_close(bus_t *bus);

/*
 * Broadcasts the NUL-terminated `message` to every process listening on
 * the bus, and returns once each has received it. With no listener it
 * returns at once. By convention a message is "<pid> <payload>".
 *
 * flags: BUS_NOWAIT to fail with EAGAIN if another process is
 * broadcasting on the bus. A signal does not interrupt the call.
 *
 * Errors: EMSGSIZE (more than BUS_MEMORY_SIZE - 1 bytes, refused before
 * touching the bus), EAGAIN, EBADF (`bus` was opened BUS_RDONLY), EINVAL
 * (`bus` is not open), EIDRM (the bus was removed).
 */
BUS_MUST_CHECK_
int bus_write(const bus_t *bus, const char *message, int flags);

/*
 * Like bus_write, but fails with EAGAIN if the broadcast has not completed
 * by `timeout`, an absolute time on clock `clockid` (any clock
 * clock_gettime reads; one it cannot read is EINVAL). A NULL `timeout` waits as
 * long as needed. When the time runs out after the message was published,
 * some listeners may have received it.
 */
BUS_MUST_CHECK_
int bus_write_timed(const bus_t *bus, const char *message,
                    const struct timespec *timeout, clockid_t clockid);

/*
 * Listens on the bus, calling `callback` for each message.
 *
 * The callback is first called once with `message` NULL, as soon as the
 * process is counted on the bus: from then on no broadcast is missed, so
 * this is where to tell others "I am listening". Then it is called with
 * each message, NUL-terminated, in order. `message` is valid only during
 * the call; copy it to keep it.
 *
 * The callback returns 1 (or any positive value) to keep listening, 0 to
 * stop (bus_read returns 0), or -1 (any negative value) after setting
 * errno to fail (bus_read returns -1 with that errno).
 *
 * A NULL callback fails with EINVAL. A signal does not interrupt the
 * call.
 *
 * Errors: EINVAL, EIDRM (the bus was removed), and the callback's.
 */
BUS_MUST_CHECK_
int bus_read(const bus_t *BUS_RESTRICT_ bus,
             int (*callback)(const char *message, void *user_data),
             void *user_data);

/*
 * Like bus_read, but fails with EAGAIN once `timeout` has passed, an
 * absolute time on clock `clockid` (any clock clock_gettime reads).
 * The deadline covers joining the bus and each wait for a message; it may
 * pass after the callback was called any number of times. A NULL
 * `timeout` is bus_read.
 */
BUS_MUST_CHECK_
int bus_read_timed(const bus_t *BUS_RESTRICT_ bus,
                   int (*callback)(const char *message, void *user_data),
                   void *user_data, const struct timespec *timeout,
                   clockid_t clockid);

/*
 * Starts listening without a callback: from its return, every broadcast
 * is kept for bus_poll. Sets bus->first_poll. Calling it again while
 * polling changes nothing.
 *
 * While polling, each broadcast waits until this process has polled the
 * previous one, so poll often or stop with bus_poll_stop.
 */
BUS_MUST_CHECK_
int bus_poll_start(bus_t *bus);

/*
 * Stops listening started by bus_poll_start (nothing to do if it was not
 * started). bus_close does this too. If another thread is blocked in
 * bus_poll on this bus, this waits for that call to return.
 */
BUS_MUST_CHECK_
int bus_poll_stop(const bus_t *bus);

/*
 * Returns the next message broadcast since bus_poll_start, waiting for it
 * if need be. The string belongs to the library and stays valid until the
 * next bus_poll, bus_poll_timed, bus_poll_stop or bus_close on this bus.
 *
 * flags: BUS_NOWAIT to fail with EAGAIN if no message is waiting. A signal
 * does not interrupt the call.
 *
 * Errors: EINVAL (not open, or bus_poll_start was not called), EAGAIN,
 * EIDRM (the bus was removed).
 */
BUS_MUST_CHECK_
const char *bus_poll(bus_t *bus, int flags);

/*
 * Like bus_poll without BUS_NOWAIT, but fails with EAGAIN if no message
 * came by `timeout`, an absolute time on clock `clockid`
 * (any clock clock_gettime reads). A NULL `timeout` waits as long as
 * needed.
 */
BUS_MUST_CHECK_
const char *bus_poll_timed(bus_t *bus, const struct timespec *timeout,
                           clockid_t clockid);

/*
 * Gives the bus at `file` to user `owner` and group `group`: the file,
 * then the semaphore array and the shared memory. (uid_t)-1 or (gid_t)-1
 * keeps the current one. Read the current ones with stat(2) on the file.
 *
 * Errors: those of chown(2) and bus_open.
 */
BUS_MUST_CHECK_
int bus_chown(const char *file, uid_t owner, gid_t group);

/*
 * Sets who may use the bus at `file`. Access is per class (owner, group,
 * others): any permission bit of a class in `mode` lets that class
 * broadcast and listen; none shuts it out. The file itself stays writable
 * by its owner only, so only the owner can point it at other objects.
 *
 * Errors: those of chmod(2) and bus_open.
 */
BUS_MUST_CHECK_
int bus_chmod(const char *file, mode_t mode);

#ifdef __cplusplus
}
#endif

#endif /* BUS_H */
