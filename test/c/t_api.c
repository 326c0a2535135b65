/* Unit tests of every libbus function, one bus per test; run with the
 * test's name as argument (--list prints the names). */
#include "common.h"

#include <fcntl.h>
#include <grp.h>
#include <stddef.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>

/* The original bus_t, field by field, to check our layout against. */
struct original_layout {
	key_t key_sem;
	key_t key_shm;
	int sem_id;
	char *message;
	int first_poll;
};

static void test_layout(void)
{
	CHECK(sizeof(bus_t) == sizeof(struct original_layout));
	CHECK(offsetof(bus_t, key_sem) == offsetof(struct original_layout, key_sem));
	CHECK(offsetof(bus_t, key_shm) == offsetof(struct original_layout, key_shm));
	CHECK(offsetof(bus_t, sem_id) == offsetof(struct original_layout, sem_id));
	CHECK(offsetof(bus_t, message) == offsetof(struct original_layout, message));
	CHECK(offsetof(bus_t, first_poll) == offsetof(struct original_layout, first_poll));
	CHECK(BUS_RDONLY == 1 && BUS_WRONLY == 0 && BUS_RDWR == 0);
	CHECK(BUS_EXCL == 2 && BUS_INTR == 4 && BUS_NOWAIT == 1);
	CHECK(BUS_MEMORY_SIZE == 2048);
}

/* The initial values: nobody listening, writer lock free. */
static void check_idle(const bus_t *bus)
{
	CHECK(sem_value(bus, SEM_S) == 0);
	CHECK(sem_value(bus, SEM_W) == 0);
	CHECK(sem_value(bus, SEM_X) == 1);
	CHECK(sem_value(bus, SEM_N) == 0);
}

static void read_keys_from_file(const char *path, long *sem, long *shm)
{
	FILE *f = fopen(path, "r");
	CHECK(f != NULL);
	CHECK(fscanf(f, "%ld\n%ld\n", sem, shm) == 2);
	fclose(f);
}

static void test_create_exclusive(void)
{
	char *path = test_path("bus"), *out = NULL;
	bus_t a, b;
	OK(bus_create(path, BUS_EXCL, &out));
	CHECK(out != NULL && strcmp(out, path) == 0);
	free(out);
	OK(bus_open(&a, path, BUS_RDONLY));
	log_keys(&a);
	FAILS_WITH(bus_create(path, BUS_EXCL, NULL), EEXIST);
	FAILS_WITH(bus_create(path, BUS_EXCL | BUS_INTR, NULL), EEXIST);
	/* Without BUS_EXCL an existing bus is left as it is. */
	OK(bus_create(path, 0, NULL));
	OK(bus_create(path, BUS_INTR, NULL));
	OK(bus_open(&b, path, BUS_RDONLY));
	CHECK(a.key_sem == b.key_sem && a.key_shm == b.key_shm);
	struct stat st;
	OK(stat(path, &st));
	CHECK((st.st_mode & 07777) == 0600);
	check_idle(&a);
	OK(bus_close(&b));
	OK(bus_close(&a));
	OK(bus_unlink(path));
	free(path);
}

static void test_create_random(void)
{
	char *out = NULL, *xdg = test_path("xdg"), *dir;
	bus_t bus;
	CHECK(mkdir(xdg, 0700) == 0);
	setenv("XDG_RUNTIME_DIR", xdg, 1);
	CHECK(asprintf(&dir, "%s/bus", xdg) > 0);
	OK(bus_create(NULL, 0, &out));
	CHECK(out != NULL);
	CHECK(strncmp(out, dir, strlen(dir)) == 0);
	CHECK(strncmp(out + strlen(dir), "/random.", 8) == 0);
	CHECK(strlen(out + strlen(dir) + 8) == 30);
	OK(bus_open(&bus, out, BUS_RDWR));
	log_keys(&bus);
	check_idle(&bus);
	OK(bus_close(&bus));
	OK(bus_unlink(out));
	CHECK(rmdir(dir) == 0 && rmdir(xdg) == 0);
	free(out);
	free(dir);
	free(xdg);
}

static void test_open_errors(void)
{
	char *missing = test_path("missing"), *junk = test_path("junk");
	bus_t bus;
	FILE *f;
	FAILS_WITH(bus_open(&bus, missing, BUS_RDONLY), ENOENT);
	FAILS_WITH(bus_unlink(missing), ENOENT);
	FAILS_WITH(bus_chmod(missing, 0700), ENOENT);
	FAILS_WITH(bus_chown(missing, getuid(), getgid()), ENOENT);
	f = fopen(junk, "w");
	CHECK(f != NULL);
	fputs("this is not\na bus file\n", f);
	fclose(f);
	FAILS_WITH(bus_open(&bus, junk, BUS_RDONLY), EINVAL);
	FAILS_WITH(bus_open(&bus, junk, BUS_RDWR), EINVAL);
	FAILS_WITH(bus_unlink(junk), EINVAL);
	FAILS_WITH(bus_chmod(junk, 0700), EINVAL);
	CHECK(unlink(junk) == 0);
	/* Objects that do not exist: the bus was removed behind our back. */
	f = fopen(junk, "w");
	fputs("1073741823\n1073741822\n", f);
	fclose(f);
	errno = 0;
	CHECK(bus_open(&bus, junk, BUS_RDONLY) == -1 && errno != 0);
	CHECK(unlink(junk) == 0);
	free(missing);
	free(junk);
}

/* Every call that takes a pathname refuses `path` with errno `code`, at
 * once: none of them may block because of what the pathname names. */
static void expect_refused(const char *path, int code)
{
	bus_t bus;
	struct timespec t0, t1;
	double took;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	FAILS_WITH(bus_open(&bus, path, BUS_RDONLY), code);
	FAILS_WITH(bus_open(&bus, path, BUS_RDWR), code);
	FAILS_WITH(bus_unlink(path), code);
	FAILS_WITH(bus_chmod(path, 0600), code);
	FAILS_WITH(bus_chown(path, getuid(), getgid()), code);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	took = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (took > 1.0)
		FAIL("%s: five calls took %.2f s", path, took);
}

/* A FIFO, a socket, devices, a directory, a symbolic link loop, a
 * dangling link, a huge file and a /proc file: refused at once with the
 * errno naming the problem; another user is refused with EACCES. Needs
 * root (mknod, setuid). */
static void test_open_kinds(void)
{
	char *fifo = test_path("fifo"), *sock = test_path("socket"),
	     *chr = test_path("chr"), *blk = test_path("blk"),
	     *dir = test_path("dir"), *loop_a = test_path("loop-a"),
	     *loop_b = test_path("loop-b"), *dangling = test_path("dangling"),
	     *nowhere = test_path("nowhere"), *huge = test_path("huge"),
	     *private_bus, *open_bus;
	char shared_dir[] = "/tmp/bus-c-test-XXXXXX";
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd, status;
	pid_t child;
	bus_t bus;

	if (geteuid() != 0)
		FAIL("needs root (mknod, setuid): cannot run");
	OK(mkfifo(fifo, 0600));
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(fd >= 0 && strlen(sock) < sizeof(addr.sun_path));
	strcpy(addr.sun_path, sock);
	OK(bind(fd, (struct sockaddr *)&addr, sizeof(addr)));
	OK(mknod(chr, S_IFCHR | 0600, makedev(1, 3)));
	OK(mknod(blk, S_IFBLK | 0600, makedev(7, 0)));
	OK(mkdir(dir, 0700));
	OK(symlink(loop_b, loop_a));
	OK(symlink(loop_a, loop_b));
	OK(symlink(nowhere, dangling));
	fd = open(huge, O_CREAT | O_WRONLY, 0600);
	CHECK(fd >= 0);
	OK(ftruncate(fd, (off_t)1 << 40));
	close(fd);

	expect_refused(fifo, EINVAL);
	expect_refused(sock, EINVAL);
	expect_refused(chr, EINVAL);
	expect_refused(blk, EINVAL);
	expect_refused(dir, EINVAL);
	expect_refused(loop_a, ELOOP);
	expect_refused(dangling, ENOENT);
	expect_refused(huge, EINVAL);
	expect_refused("/proc/self/status", EINVAL);

	/* Another user, in a directory anyone may search: the file (mode
	 * 0600, root's) refuses; open to all, only its owner may still change
	 * who owns it or may use it. */
	CHECK(mkdtemp(shared_dir) != NULL);
	OK(chmod(shared_dir, 0755));
	CHECK(asprintf(&private_bus, "%s/private", shared_dir) > 0);
	CHECK(asprintf(&open_bus, "%s/open", shared_dir) > 0);
	OK(bus_create(private_bus, BUS_EXCL, NULL));
	OK(bus_open(&bus, private_bus, BUS_RDONLY));
	log_keys(&bus);
	OK(bus_close(&bus));
	OK(bus_create(open_bus, BUS_EXCL, NULL));
	OK(bus_open(&bus, open_bus, BUS_RDONLY));
	log_keys(&bus);
	OK(bus_close(&bus));
	OK(bus_chmod(open_bus, 0777));
	child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		if (setgroups(0, NULL) || setgid(4321) || setuid(4321))
			_exit(2);
		expect_refused(private_bus, EACCES);
		FAILS_WITH(bus_chown(open_bus, 4321, 4321), EPERM);
		FAILS_WITH(bus_chmod(open_bus, 0700), EPERM);
		_exit(0);
	}
	CHECK(waitpid(child, &status, 0) == child);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	OK(bus_unlink(private_bus));
	OK(bus_unlink(open_bus));
	OK(rmdir(shared_dir));

	unlink(fifo), unlink(sock), unlink(chr), unlink(blk), rmdir(dir);
	unlink(loop_a), unlink(loop_b), unlink(dangling), unlink(huge);
	free(fifo), free(sock), free(chr), free(blk), free(dir), free(loop_a);
	free(loop_b), free(dangling), free(nowhere), free(huge), free(private_bus);
	free(open_bus);
}

static void test_null_arguments(void)
{
	char *path = test_path("bus");
	bus_t bus;
	struct timespec t = in_ms(CLOCK_MONOTONIC, 10);
	make_bus(path);
	FAILS_WITH(bus_open(NULL, path, 0), EINVAL);
	FAILS_WITH(bus_open(&bus, NULL, 0), EINVAL);
	FAILS_WITH(bus_open(&bus, path, -1), EINVAL);
	FAILS_WITH(bus_unlink(NULL), EINVAL);
	FAILS_WITH(bus_chmod(NULL, 0600), EINVAL);
	FAILS_WITH(bus_chown(NULL, 0, 0), EINVAL);
	FAILS_WITH(bus_close(NULL), EINVAL);
	FAILS_WITH(bus_write(NULL, "0 x", 0), EINVAL);
	FAILS_WITH(bus_write_timed(NULL, "0 x", &t, CLOCK_MONOTONIC), EINVAL);
	FAILS_WITH(bus_read(NULL, NULL, NULL), EINVAL);
	FAILS_WITH(bus_read_timed(NULL, NULL, NULL, &t, CLOCK_MONOTONIC), EINVAL);
	FAILS_WITH(bus_poll_start(NULL), EINVAL);
	FAILS_WITH(bus_poll_stop(NULL), EINVAL);
	errno = 0;
	CHECK(bus_poll(NULL, 0) == NULL && errno == EINVAL);
	errno = 0;
	CHECK(bus_poll_timed(NULL, &t, CLOCK_MONOTONIC) == NULL && errno == EINVAL);
	OK(bus_open(&bus, path, BUS_RDWR));
	FAILS_WITH(bus_write(&bus, NULL, 0), EINVAL);
	/* A NULL callback is refused before joining the bus. */
	FAILS_WITH(bus_read(&bus, NULL, NULL), EINVAL);
	FAILS_WITH(bus_read_timed(&bus, NULL, NULL, &t, CLOCK_REALTIME), EINVAL);
	check_idle(&bus);
	OK(bus_close(&bus));
	/* A closed (or never opened) bus_t. */
	FAILS_WITH(bus_close(&bus), EINVAL);
	FAILS_WITH(bus_write(&bus, "0 x", 0), EINVAL);
	FAILS_WITH(bus_poll_start(&bus), EINVAL);
	OK(bus_unlink(path));
	free(path);
}

static void test_open_fields(void)
{
	char *path = test_path("bus");
	bus_t a, b;
	long sem, shm;
	make_bus(path);
	read_keys_from_file(path, &sem, &shm);
	OK(bus_open(&a, path, BUS_RDONLY));
	OK(bus_open(&b, path, BUS_WRONLY));
	CHECK(a.key_sem == (key_t)sem && a.key_shm == (key_t)shm);
	CHECK(b.key_sem == (key_t)sem && b.key_shm == (key_t)shm);
	CHECK(a.sem_id == semget(a.key_sem, 5, 0));
	CHECK(a.sem_id == b.sem_id);
	CHECK(a.message != NULL && b.message != NULL && a.message != b.message);
	CHECK(a.first_poll == 0);
	/* A copy of a bus_t is the same open bus. */
	bus_t copy = b;
	OK(bus_write(&copy, "0 through a copy", 0));
	OK(bus_close(&a));
	CHECK(a.message == NULL);
	FAILS_WITH(bus_close(&a), EINVAL);
	OK(bus_close(&b));
	OK(bus_unlink(path));
	/* Everything is gone. */
	errno = 0;
	CHECK(semget((key_t)sem, 0, 0) == -1 && errno == ENOENT);
	errno = 0;
	CHECK(shmget((key_t)shm, 0, 0) == -1 && errno == ENOENT);
	CHECK(access(path, F_OK) == -1 && errno == ENOENT);
	FAILS_WITH(bus_open(&a, path, BUS_RDONLY), ENOENT);
	free(path);
}

static void test_write_alone(void)
{
	char *path = test_path("bus");
	char big[BUS_MEMORY_SIZE + 1];
	bus_t bus, ro;
	struct timespec past = {0, 0}, t;
	make_bus(path);
	OK(bus_open(&bus, path, BUS_RDWR));
	OK(bus_open(&ro, path, BUS_RDONLY));
	/* Nobody listens: a broadcast returns at once. */
	OK(bus_write(&bus, "0 nobody", 0));
	OK(bus_write(&bus, "0 nobody", BUS_NOWAIT));
	OK(bus_write(&bus, "0 nobody", BUS_INTR));
	OK(bus_write_timed(&bus, "0 nobody", NULL, CLOCK_MONOTONIC));
	t = in_ms(CLOCK_MONOTONIC, 1000);
	OK(bus_write_timed(&bus, "0 timed", &t, CLOCK_MONOTONIC));
	t = in_ms(CLOCK_REALTIME, 1000);
	OK(bus_write_timed(&bus, "0 timed", &t, CLOCK_REALTIME));
	/* Longest message: 2047 bytes; one more is EMSGSIZE, bus untouched. */
	memset(big, 'a', sizeof(big));
	big[BUS_MEMORY_SIZE - 1] = '\0';
	OK(bus_write(&bus, big, 0));
	big[BUS_MEMORY_SIZE - 1] = 'a';
	big[BUS_MEMORY_SIZE] = '\0';
	FAILS_WITH(bus_write(&bus, big, 0), EMSGSIZE);
	FAILS_WITH(bus_write(&bus, big, BUS_NOWAIT), EMSGSIZE);
	FAILS_WITH(bus_write_timed(&bus, big, &t, CLOCK_REALTIME), EMSGSIZE);
	check_idle(&bus);
	/* A deadline already past: EAGAIN before anything is done. */
	FAILS_WITH(bus_write_timed(&bus, "0 late", &past, CLOCK_MONOTONIC), EAGAIN);
	FAILS_WITH(bus_write_timed(&bus, "0 late", &past, CLOCK_REALTIME), EAGAIN);
	/* Any clock clock_gettime reads, and a valid timespec. */
	FAILS_WITH(bus_write_timed(&bus, "0 x", &t, 1000), EINVAL);
	FAILS_WITH(bus_write_timed(&bus, "0 late", &past, CLOCK_PROCESS_CPUTIME_ID), EAGAIN);
	t.tv_nsec = 1000000000L;
	FAILS_WITH(bus_write_timed(&bus, "0 x", &t, CLOCK_REALTIME), EINVAL);
	/* A bus opened to listen only cannot broadcast. */
	FAILS_WITH(bus_write(&ro, "0 x", 0), EBADF);
	check_idle(&bus);
	OK(bus_close(&ro));
	OK(bus_close(&bus));
	OK(bus_unlink(path));
	free(path);
}

/* ---- bus_read ---- */

struct reader {
	int notify_fd;  /* written to once listening */
	int calls;      /* calls with a message */
	int nulls;      /* calls with NULL */
	char last[BUS_MEMORY_SIZE];
	int fail_with;  /* errno to fail with on the first message, or 0 */
};

static int reader_cb(const char *message, void *data)
{
	struct reader *r = data;
	if (!message) {
		r->nulls++;
		if (r->notify_fd >= 0 && write(r->notify_fd, "L", 1) != 1)
			return -1;
		return 1;
	}
	r->calls++;
	strcpy(r->last, message);
	if (r->fail_with) {
		errno = r->fail_with;
		return -1;
	}
	if (strcmp(message, "0 stop") == 0)
		return 0;
	if (r->calls == 2 && strcmp(message, "0 two") != 0)
		return errno = EPROTO, -1;
	if (r->calls == 3 && strlen(message) != BUS_MEMORY_SIZE - 1)
		return errno = EPROTO, -1;
	return 1;
}

/* Forks a listener running bus_read (or bus_read_timed with a NULL or far
 * deadline); returns once it is listening. */
static pid_t spawn_reader(const char *path, int variant, int fail_with)
{
	int fds[2];
	char c;
	pid_t pid;
	CHECK(pipe(fds) == 0);
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		bus_t bus;
		struct reader r = {fds[1], 0, 0, "", fail_with};
		struct timespec far = in_ms(CLOCK_REALTIME, 60000);
		int ret;
		close(fds[0]);
		watchdog(30);
		OK(bus_open(&bus, path, BUS_RDONLY));
		errno = 0;
		if (variant == 0)
			ret = bus_read(&bus, reader_cb, &r);
		else if (variant == 1)
			ret = bus_read_timed(&bus, reader_cb, &r, NULL, CLOCK_MONOTONIC);
		else
			ret = bus_read_timed(&bus, reader_cb, &r, &far, CLOCK_REALTIME);
		if (fail_with) {
			if (ret != -1 || errno != fail_with)
				FAIL("bus_read: expected -1/%d, got %d/%d", fail_with, ret, errno);
		} else if (ret != 0) {
			FAIL("bus_read: %s", strerror(errno));
		}
		CHECK(r.nulls == 1);
		CHECK(fail_with ? r.calls == 1 : r.calls == 4);
		CHECK(fail_with || strcmp(r.last, "0 stop") == 0);
		OK(bus_close(&bus));
		_exit(0);
	}
	close(fds[1]);
	CHECK(read(fds[0], &c, 1) == 1);
	close(fds[0]);
	return pid;
}

static void test_read(void)
{
	char *path = test_path("bus");
	char big[BUS_MEMORY_SIZE];
	bus_t bus;
	pid_t a, b, c;
	make_bus(path);
	OK(bus_open(&bus, path, BUS_WRONLY));
	a = spawn_reader(path, 0, 0);
	b = spawn_reader(path, 1, 0);
	c = spawn_reader(path, 2, 0);
	CHECK(sem_value(&bus, SEM_S) == 3);
	memset(big, 'z', sizeof(big));
	big[BUS_MEMORY_SIZE - 1] = '\0';
	OK(bus_write(&bus, "0 one", 0));
	OK(bus_write(&bus, "0 two", 0));
	OK(bus_write(&bus, big, 0));
	OK(bus_write(&bus, "0 stop", 0));
	reap(a, "bus_read listener");
	reap(b, "bus_read_timed (NULL) listener");
	reap(c, "bus_read_timed listener");
	check_idle(&bus);
	OK(bus_close(&bus));
	OK(bus_unlink(path));
	free(path);
}

static void test_read_callback_error(void)
{
	char *path = test_path("bus");
	bus_t bus;
	pid_t a;
	make_bus(path);
	OK(bus_open(&bus, path, BUS_WRONLY));
	a = spawn_reader(path, 0, ENOTSUP);
	OK(bus_write(&bus, "0 one", 0));
	reap(a, "failing listener");
	/* It left the bus: a broadcast does not wait for it. */
	check_idle(&bus);
	OK(bus_write(&bus, "0 nobody", 0));
	OK(bus_close(&bus));
	OK(bus_unlink(path));
	free(path);
}

static int stop_at_null(const char *message, void *data)
{
	(void)data;
	return message ? -1 : 0;
}

static int fail_at_null(const char *message, void *data)
{
	(void)message;
	(void)data;
	errno = ENOTRECOVERABLE;
	return -1;
}

static int count_calls(const char *message, void *data)
{
	int *calls = data;
	(void)message;
	++*calls;
	return 1;
}

static void test_read_stop_and_timeout(void)
{
	char *path = test_path("bus");
	bus_t bus;
	int calls = 0;
	struct timespec start, t;
	make_bus(path);
	OK(bus_open(&bus, path, BUS_RDONLY));
	/* Stopping at the "listening" call returns 0 and leaves the bus. */
	OK(bus_read(&bus, stop_at_null, NULL));
	check_idle(&bus);
	FAILS_WITH(bus_read(&bus, fail_at_null, NULL), ENOTRECOVERABLE);
	check_idle(&bus);
	/* Timed out: EAGAIN, after the one "listening" call, on both clocks. */
	clock_gettime(CLOCK_MONOTONIC, &start);
	t = in_ms(CLOCK_MONOTONIC, 150);
	FAILS_WITH(bus_read_timed(&bus, count_calls, &calls, &t, CLOCK_MONOTONIC), EAGAIN);
	CHECK(calls == 1);
	CHECK(ms_since(&start) >= 140);
	check_idle(&bus);
	t = in_ms(CLOCK_REALTIME, 100);
	FAILS_WITH(bus_read_timed(&bus, count_calls, &calls, &t, CLOCK_REALTIME), EAGAIN);
	CHECK(calls == 2);
	check_idle(&bus);
	/* A deadline already past: EAGAIN without joining. */
	t.tv_sec = 1;
	t.tv_nsec = 0;
	FAILS_WITH(bus_read_timed(&bus, count_calls, &calls, &t, CLOCK_MONOTONIC), EAGAIN);
	CHECK(calls == 2);
	FAILS_WITH(bus_read_timed(&bus, count_calls, &calls, &t, CLOCK_BOOTTIME), EAGAIN);
	FAILS_WITH(bus_read_timed(&bus, count_calls, &calls, &t, 1000), EINVAL);
	CHECK(calls == 2);
	check_idle(&bus);
	OK(bus_close(&bus));
	OK(bus_unlink(path));
	free(path);
}

/* ---- polling ---- */

/* Forks a process that broadcasts each of `messages` (NULL-terminated). */
static pid_t spawn_writer(const char *path, const char *const *messages)
{
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		bus_t bus;
		watchdog(30);
		OK(bus_open(&bus, path, BUS_WRONLY));
		for (; *messages; messages++)
			OK(bus_write(&bus, *messages, 0));
		OK(bus_close(&bus));
		_exit(0);
	}
	return pid;
}

static void test_poll(void)
{
	static const char *const messages[] = {"0 one", "0 two", "0 three", NULL};
	char *path = test_path("bus");
	bus_t bus;
	const char *m;
	struct timespec start, t;
	pid_t writer;
	make_bus(path);
	OK(bus_open(&bus, path, BUS_RDONLY));
	errno = 0;
	CHECK(bus_poll(&bus, 0) == NULL && errno == EINVAL);
	OK(bus_poll_stop(&bus)); /* not polling: nothing to do */
	OK(bus_poll_start(&bus));
	CHECK(bus.first_poll != 0);
	CHECK(sem_value(&bus, SEM_S) == 1);
	OK(bus_poll_start(&bus)); /* again: still counted once */
	CHECK(sem_value(&bus, SEM_S) == 1);
	/* Nothing waiting. */
	errno = 0;
	CHECK(bus_poll(&bus, BUS_NOWAIT) == NULL && errno == EAGAIN);
	CHECK(bus.first_poll != 0);
	clock_gettime(CLOCK_MONOTONIC, &start);
	t = in_ms(CLOCK_MONOTONIC, 120);
	errno = 0;
	CHECK(bus_poll_timed(&bus, &t, CLOCK_MONOTONIC) == NULL && errno == EAGAIN);
	CHECK(ms_since(&start) >= 110);
	t = in_ms(CLOCK_REALTIME, 50);
	errno = 0;
	CHECK(bus_poll_timed(&bus, &t, CLOCK_REALTIME) == NULL && errno == EAGAIN);
	errno = 0;
	CHECK(bus_poll_timed(&bus, &t, 1000) == NULL && errno == EINVAL);

	writer = spawn_writer(path, messages);
	m = bus_poll(&bus, 0);
	CHECK(m != NULL && strcmp(m, "0 one") == 0);
	CHECK(bus.first_poll == 0);
	/* A copy owned by the library, not the shared memory itself. */
	CHECK(m < bus.message || m >= bus.message + BUS_MEMORY_SIZE);
	t = in_ms(CLOCK_MONOTONIC, 10000);
	m = bus_poll_timed(&bus, &t, CLOCK_MONOTONIC);
	CHECK(m != NULL && strcmp(m, "0 two") == 0);
	/* "three" cannot be published before this poller re-arms, which a
	 * no-wait poll does before finding nothing: EAGAIN until the writer
	 * has published it. */
	for (int i = 0;; i++) {
		struct timespec nap = {0, 1000000};
		errno = 0;
		m = bus_poll(&bus, BUS_NOWAIT);
		if (m)
			break;
		CHECK(errno == EAGAIN);
		CHECK(bus.first_poll != 0);
		CHECK(i < 10000);
		nanosleep(&nap, NULL);
	}
	CHECK(m != NULL && strcmp(m, "0 three") == 0);
	reap(writer, "writer");
	/* A NULL deadline waits as long as needed (here: nothing is sent,
	 * so poll without waiting first to check the state). */
	OK(bus_poll_stop(&bus));
	CHECK(sem_value(&bus, SEM_S) == 0);
	OK(bus_poll_stop(&bus));
	/* Polling again after a stop needs a new start. */
	errno = 0;
	CHECK(bus_poll(&bus, BUS_NOWAIT) == NULL && errno == EINVAL);
	check_idle(&bus);
	OK(bus_close(&bus));
	OK(bus_unlink(path));
	free(path);
}

static void test_poll_null_deadline_and_close(void)
{
	static const char *const messages[] = {"0 only", NULL};
	char *path = test_path("bus");
	bus_t bus;
	const char *m;
	pid_t writer;
	make_bus(path);
	OK(bus_open(&bus, path, BUS_RDWR));
	OK(bus_poll_start(&bus));
	writer = spawn_writer(path, messages);
	m = bus_poll_timed(&bus, NULL, CLOCK_MONOTONIC);
	CHECK(m != NULL && strcmp(m, "0 only") == 0);
	reap(writer, "writer");
	/* Closing while polling leaves the bus. */
	OK(bus_close(&bus));
	OK(bus_open(&bus, path, BUS_RDWR));
	check_idle(&bus);
	OK(bus_write(&bus, "0 nobody", BUS_NOWAIT));
	OK(bus_close(&bus));
	OK(bus_unlink(path));
	free(path);
}

/* Another process broadcasting: a no-wait write fails with EAGAIN and a
 * timed one times out; a poller that does not poll holds up writers. */
static void test_write_busy(void)
{
	static const char *const messages[] = {"0 first", NULL};
	char *path = test_path("bus");
	bus_t bus;
	const char *m;
	struct timespec t;
	pid_t writer;
	make_bus(path);
	OK(bus_open(&bus, path, BUS_RDWR));
	OK(bus_poll_start(&bus));
	writer = spawn_writer(path, messages);
	/* The writer holds the writer lock until we take "0 first". */
	await_sem_zero(&bus, SEM_X);
	FAILS_WITH(bus_write(&bus, "0 second", BUS_NOWAIT), EAGAIN);
	t = in_ms(CLOCK_MONOTONIC, 100);
	FAILS_WITH(bus_write_timed(&bus, "0 second", &t, CLOCK_MONOTONIC), EAGAIN);
	t = in_ms(CLOCK_REALTIME, 100);
	FAILS_WITH(bus_write_timed(&bus, "0 second", &t, CLOCK_REALTIME), EAGAIN);
	m = bus_poll(&bus, 0);
	CHECK(m != NULL && strcmp(m, "0 first") == 0);
	reap(writer, "writer");
	OK(bus_poll_stop(&bus));
	check_idle(&bus);
	OK(bus_close(&bus));
	OK(bus_unlink(path));
	free(path);
}

/* The timed calls on clocks other than CLOCK_MONOTONIC and CLOCK_REALTIME,
 * as the original library accepts them: each of CLOCK_MONOTONIC_RAW and
 * CLOCK_BOOTTIME gives a write, a read and a poll time limits that work
 * (a message within the limit is taken, none fails with EAGAIN). */
static void test_timed_any_clock(void)
{
	static const clockid_t clocks[] = {CLOCK_MONOTONIC_RAW, CLOCK_BOOTTIME};
	static const char *const messages[] = {"0 in time", NULL};
	char *path = test_path("bus");
	bus_t bus, writer;
	int calls;
	const char *m;
	struct timespec t, past = {0, 0};
	pid_t child;
	make_bus(path);
	OK(bus_open(&bus, path, BUS_RDONLY));
	OK(bus_open(&writer, path, BUS_WRONLY));
	for (size_t i = 0; i < sizeof(clocks) / sizeof(*clocks); i++) {
		clockid_t c = clocks[i];
		/* Nobody listens: returns at once; a deadline past: EAGAIN. */
		t = in_ms(c, 10000);
		OK(bus_write_timed(&writer, "0 nobody", &t, c));
		FAILS_WITH(bus_write_timed(&writer, "0 late", &past, c), EAGAIN);
		/* A read that hears nothing: EAGAIN after the "listening" call. */
		calls = 0;
		t = in_ms(c, 50);
		FAILS_WITH(bus_read_timed(&bus, count_calls, &calls, &t, c), EAGAIN);
		CHECK(calls == 1);
		check_idle(&bus);
		/* A poll: nothing within the limit, then a message within it. */
		OK(bus_poll_start(&bus));
		t = in_ms(c, 50);
		errno = 0;
		CHECK(bus_poll_timed(&bus, &t, c) == NULL && errno == EAGAIN);
		child = spawn_writer(path, messages);
		t = in_ms(c, 20000);
		m = bus_poll_timed(&bus, &t, c);
		CHECK(m != NULL && strcmp(m, "0 in time") == 0);
		reap(child, "writer");
		/* Our poller holds the next writer until it polls again: the
		 * write times out before publishing, and gives the lock back. */
		t = in_ms(c, 50);
		FAILS_WITH(bus_write_timed(&writer, "0 held", &t, c), EAGAIN);
		CHECK(sem_value(&writer, SEM_X) == 1);
		OK(bus_poll_stop(&bus));
		check_idle(&bus);
	}
	OK(bus_close(&bus));
	OK(bus_close(&writer));
	OK(bus_unlink(path));
	free(path);
}

/* A listener that does not take a message in time: a timed write returns
 * EAGAIN, and the round is finished when the listener takes it. */
static void test_write_timeout_after_publish(void)
{
	char *path = test_path("bus");
	bus_t listener, writer;
	const char *m;
	struct timespec t;
	make_bus(path);
	OK(bus_open(&listener, path, BUS_RDONLY));
	OK(bus_open(&writer, path, BUS_WRONLY));
	OK(bus_poll_start(&listener));
	t = in_ms(CLOCK_MONOTONIC, 100);
	FAILS_WITH(bus_write_timed(&writer, "0 unread", &t, CLOCK_MONOTONIC), EAGAIN);
	/* Published: the call returned, but this process keeps the writer lock
	 * until the poller has the message (a thread finishes the round), so
	 * no other writer can overwrite it first. */
	CHECK(sem_value(&writer, SEM_X) == 0);
	m = bus_poll(&listener, BUS_NOWAIT);
	CHECK(m != NULL && strcmp(m, "0 unread") == 0);
	await_sem_at_least(&writer, SEM_X, 1);
	OK(bus_poll_stop(&listener));
	check_idle(&writer);
	OK(bus_close(&listener));
	OK(bus_close(&writer));
	OK(bus_unlink(path));
	free(path);
}

static void test_chmod_chown(void)
{
	char *path = test_path("bus");
	bus_t bus;
	struct stat st;
	struct semid_ds sds;
	struct shmid_ds mds;
	union semun { int val; struct semid_ds *buf; unsigned short *array; } arg;
	make_bus(path);
	OK(bus_open(&bus, path, BUS_RDONLY));

	OK(bus_chmod(path, 0750));
	OK(stat(path, &st));
	CHECK((st.st_mode & 07777) == 0640);
	arg.buf = &sds;
	CHECK(semctl(bus.sem_id, 0, IPC_STAT, arg) == 0);
	CHECK((sds.sem_perm.mode & 0777) == 0660);
	CHECK(shmctl(shmget(bus.key_shm, 0, 0), IPC_STAT, &mds) == 0);
	CHECK((mds.shm_perm.mode & 0777) == 0660);
	OK(bus_chmod(path, 0104));
	OK(stat(path, &st));
	CHECK((st.st_mode & 07777) == 0604);
	CHECK(semctl(bus.sem_id, 0, IPC_STAT, arg) == 0);
	CHECK((sds.sem_perm.mode & 0777) == 0606);
	OK(bus_chmod(path, 0700));
	OK(stat(path, &st));
	CHECK((st.st_mode & 07777) == 0600);

	OK(bus_chown(path, getuid(), getgid()));
	OK(bus_chown(path, (uid_t)-1, (gid_t)-1));
	OK(stat(path, &st));
	CHECK(st.st_uid == getuid() && st.st_gid == getgid());
	if (geteuid() == 0) {
		OK(bus_chown(path, 1, 1));
		OK(stat(path, &st));
		CHECK(st.st_uid == 1 && st.st_gid == 1);
		CHECK(semctl(bus.sem_id, 0, IPC_STAT, arg) == 0);
		CHECK(sds.sem_perm.uid == 1 && sds.sem_perm.gid == 1);
		OK(bus_chown(path, (uid_t)-1, 0));
		OK(stat(path, &st));
		CHECK(st.st_uid == 1 && st.st_gid == 0);
		OK(bus_chown(path, 0, 0));
	} else {
		FAILS_WITH(bus_chown(path, 0, 0), EPERM);
	}
	OK(bus_close(&bus));
	OK(bus_unlink(path));
	free(path);
}

/* Without BUS_INTR a signal whose handler returns does not interrupt a
 * blocked bus_read or bus_poll. */
static volatile sig_atomic_t signals_handled;

static void on_signal(int sig)
{
	(void)sig;
	signals_handled++;
}

static int ready_then_expect(const char *message, void *data)
{
	int *fd = data;
	if (!message)
		return write(*fd, "r", 1) == 1 ? 1 : -1;
	if (strcmp(message, "0 after signals") != 0)
		return errno = EPROTO, -1;
	return 0;
}

static void test_signals_do_not_interrupt(void)
{
	char *path = test_path("bus");
	bus_t bus;
	pid_t children[2];
	make_bus(path);
	OK(bus_open(&bus, path, BUS_RDWR));
	for (int i = 0; i < 2; i++) {
		int fds[2];
		char c;
		CHECK(pipe(fds) == 0);
		children[i] = fork();
		CHECK(children[i] >= 0);
		if (children[i] == 0) {
			struct sigaction sa;
			bus_t mine;
			memset(&sa, 0, sizeof(sa));
			sa.sa_handler = on_signal; /* no SA_RESTART */
			CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
			watchdog(30);
			close(fds[0]);
			OK(bus_open(&mine, path, BUS_RDONLY));
			if (i == 0) {
				OK(bus_read(&mine, ready_then_expect, &fds[1]));
			} else {
				const char *m;
				OK(bus_poll_start(&mine));
				CHECK(write(fds[1], "r", 1) == 1);
				m = bus_poll(&mine, 0);
				if (!m)
					FAIL("bus_poll: %s", strerror(errno));
				CHECK(strcmp(m, "0 after signals") == 0);
				OK(bus_poll_stop(&mine));
			}
			CHECK(signals_handled > 0);
			OK(bus_close(&mine));
			_exit(0);
		}
		close(fds[1]);
		CHECK(read(fds[0], &c, 1) == 1);
		close(fds[0]);
	}
	/* Both are counted; signal them while they wait (the naps only give
	 * the signals a chance to land inside the blocking call). */
	for (int k = 0; k < 20; k++) {
		struct timespec nap = {0, 2000000};
		CHECK(kill(children[0], SIGUSR1) == 0 && kill(children[1], SIGUSR1) == 0);
		nanosleep(&nap, NULL);
	}
	OK(bus_write(&bus, "0 after signals", 0));
	reap(children[0], "bus_read listener");
	reap(children[1], "bus_poll listener");
	check_idle(&bus);
	OK(bus_close(&bus));
	OK(bus_unlink(path));
	free(path);
}

static const struct {
	const char *name;
	void (*run)(void);
} tests[] = {
	{"layout", test_layout},
	{"create_exclusive", test_create_exclusive},
	{"create_random", test_create_random},
	{"open_errors", test_open_errors},
	{"open_kinds", test_open_kinds},
	{"null_arguments", test_null_arguments},
	{"open_fields", test_open_fields},
	{"write_alone", test_write_alone},
	{"read", test_read},
	{"read_callback_error", test_read_callback_error},
	{"read_stop_and_timeout", test_read_stop_and_timeout},
	{"poll", test_poll},
	{"poll_null_deadline_and_close", test_poll_null_deadline_and_close},
	{"write_busy", test_write_busy},
	{"write_timeout_after_publish", test_write_timeout_after_publish},
	{"timed_any_clock", test_timed_any_clock},
	{"chmod_chown", test_chmod_chown},
	{"signals_do_not_interrupt", test_signals_do_not_interrupt},
};

int main(int argc, char *argv[])
{
	size_t i, n = sizeof(tests) / sizeof(*tests);
	if (argc == 2 && strcmp(argv[1], "--list") == 0) {
		for (i = 0; i < n; i++)
			puts(tests[i].name);
		return 0;
	}
	if (argc != 2) {
		fprintf(stderr, "usage: %s --list | TEST\n", argv[0]);
		return 2;
	}
	for (i = 0; i < n; i++) {
		if (strcmp(argv[1], tests[i].name) == 0) {
			test_name = tests[i].name;
			watchdog(30);
			tests[i].run();
			return 0;
		}
	}
	fprintf(stderr, "no test %s\n", argv[1]);
	return 2;
}
