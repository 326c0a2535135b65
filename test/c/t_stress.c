/* Back-to-back broadcasts through libbus: WRITERS processes each send
 * MESSAGES numbered messages as fast as they can, to READERS bus_read
 * listeners and POLLERS bus_poll listeners (every other one with
 * bus_poll_timed), while CHURNERS processes keep joining and leaving.
 *
 * Each steady listener must get every message exactly once, in each
 * writer's order; churners must see each writer's messages in increasing
 * order. A hang is caught by the watchdog.
 *
 * usage: t_stress MESSAGES WRITERS READERS POLLERS [CHURNERS] */
#include "common.h"

#include <fcntl.h>

#define MAX_WRITERS 16

static long messages, writers;
static const char *path;

struct tally {
	long next[MAX_WRITERS];
	long received;
	long total;
	const char *who;
};

/* Checks one message against the tally: strictly the next one of its
 * writer (`exact`), or any later one. Returns 1 once all have come. */
static int count(struct tally *t, const char *message, int exact)
{
	long pid, w, seq;
	if (sscanf(message, "%ld %ld %ld", &pid, &w, &seq) != 3 || w < 0 || w >= writers)
		FAIL("%s: malformed message \"%s\"", t->who, message);
	if (exact ? seq != t->next[w] : seq < t->next[w])
		FAIL("%s: from writer %ld expected %s%ld, got %ld (message %ld)", t->who,
		     w, exact ? "" : ">= ", t->next[w], seq, t->received);
	t->next[w] = seq + 1;
	return ++t->received == t->total;
}

struct reader {
	struct tally tally;
	int ready_fd;
};

static int on_message(const char *message, void *data)
{
	struct reader *r = data;
	if (!message) {
		CHECK(write(r->ready_fd, "r", 1) == 1);
		close(r->ready_fd);
		return 1;
	}
	return count(&r->tally, message, 1) ? 0 : 1;
}

static void reader(int ready_fd)
{
	bus_t bus;
	struct reader r = {{{0}, 0, messages * writers, "reader"}, ready_fd};
	OK(bus_open(&bus, path, BUS_RDONLY));
	OK(bus_read(&bus, on_message, &r));
	CHECK(r.tally.received == r.tally.total);
	OK(bus_close(&bus));
}

static void poller(int ready_fd, int timed)
{
	bus_t bus;
	struct tally t = {{0}, 0, messages * writers, timed ? "timed poller" : "poller"};
	const char *m;
	OK(bus_open(&bus, path, BUS_RDONLY));
	OK(bus_poll_start(&bus));
	CHECK(write(ready_fd, "p", 1) == 1);
	close(ready_fd);
	do {
		if (timed) {
			struct timespec deadline = in_ms(CLOCK_MONOTONIC, 60000);
			m = bus_poll_timed(&bus, &deadline, CLOCK_MONOTONIC);
		} else {
			m = bus_poll(&bus, 0);
		}
		if (!m)
			FAIL("%s: %s", t.who, strerror(errno));
	} while (!count(&t, m, 1));
	OK(bus_poll_stop(&bus));
	OK(bus_close(&bus));
}

/* Joins and leaves until `stop_fd` reaches end of file. */
static void churner(int stop_fd)
{
	bus_t bus;
	struct tally t = {{0}, 0, -1, "churner"};
	char c;
	unsigned rounds = 0, seed = (unsigned)getpid();
	OK(bus_open(&bus, path, BUS_RDONLY));
	while (read(stop_fd, &c, 1) < 0 && errno == EAGAIN) {
		int n = 1 + rand_r(&seed) % 4;
		OK(bus_poll_start(&bus));
		while (n--) {
			struct timespec deadline = in_ms(CLOCK_REALTIME, 50);
			const char *m = bus_poll_timed(&bus, &deadline, CLOCK_REALTIME);
			if (!m) {
				CHECK(errno == EAGAIN);
				break;
			}
			count(&t, m, 0);
		}
		OK(bus_poll_stop(&bus));
		rounds++;
	}
	OK(bus_close(&bus));
}

static void writer(long w)
{
	bus_t bus;
	char message[64];
	OK(bus_open(&bus, path, BUS_WRONLY));
	for (long i = 0; i < messages; i++) {
		snprintf(message, sizeof(message), "%ld %ld %ld", (long)getpid(), w, i);
		OK(bus_write(&bus, message, 0));
	}
	OK(bus_close(&bus));
}

int main(int argc, char *argv[])
{
	long readers, pollers, churners = 0, listeners;
	int ready[2], stop[2];
	pid_t pids[64];
	int n = 0;
	struct timespec start;
	char c;

	test_name = "stress";
	if (argc < 5 || argc > 6) {
		fprintf(stderr, "usage: %s MESSAGES WRITERS READERS POLLERS [CHURNERS]\n", argv[0]);
		return 2;
	}
	messages = atol(argv[1]);
	writers = atol(argv[2]);
	readers = atol(argv[3]);
	pollers = atol(argv[4]);
	if (argc == 6)
		churners = atol(argv[5]);
	listeners = readers + pollers;
	CHECK(writers >= 1 && writers <= MAX_WRITERS && listeners + writers + churners <= 64);
	watchdog(100);
	path = test_path("stress");
	make_bus(path);
	CHECK(pipe(ready) == 0 && pipe(stop) == 0);
	CHECK(fcntl(stop[0], F_SETFL, O_NONBLOCK) == 0);

	for (long i = 0; i < listeners; i++) {
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			watchdog(100); /* alarms are not inherited */
			close(ready[0]);
			if (i < readers)
				reader(ready[1]);
			else
				poller(ready[1], (i - readers) % 2);
			_exit(0);
		}
		pids[n++] = pid;
	}
	close(ready[1]);
	/* Every listener is counted on the bus once it has said so. */
	for (long i = 0; i < listeners; i++)
		CHECK(read(ready[0], &c, 1) == 1);
	close(ready[0]);

	for (long i = 0; i < churners; i++) {
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			watchdog(100);
			close(stop[1]);
			churner(stop[0]);
			_exit(0);
		}
		pids[n++] = pid;
	}
	close(stop[0]);

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (long w = 0; w < writers; w++) {
		pid_t pid = fork();
		CHECK(pid >= 0);
		if (pid == 0) {
			watchdog(100);
			writer(w);
			_exit(0);
		}
		pids[n++] = pid;
	}
	for (long i = 0; i < listeners; i++)
		reap(pids[i], i < readers ? "reader" : "poller");
	double ms = ms_since(&start);
	for (long i = listeners + churners; i < n; i++)
		reap(pids[i], "writer");
	close(stop[1]);
	for (long i = listeners; i < listeners + churners; i++)
		reap(pids[i], "churner");

	OK(bus_unlink(path));
	char extra[64] = "";
	if (churners)
		snprintf(extra, sizeof(extra), ", with %ld churners", churners);
	printf("%ld messages (%ld writers x %ld) to %ld listeners (%ld read, %ld poll)%s"
	       " in %.0f ms: %.0f messages/s\n",
	       messages * writers, writers, messages, listeners, readers, pollers, extra,
	       ms, messages * writers / (ms / 1000));
	free((char *)path);
	return 0;
}
