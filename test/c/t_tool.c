/* A small command-line client of libbus, for the interoperation tests
 * with the Rust `bus` command (driven by test/c/run).
 *
 *   t_tool create PATH               create exclusively, log the keys
 *   t_tool unlink PATH
 *   t_tool listen PATH COUNT         bus_read: print "listening", then
 *                                    COUNT messages, one per line
 *   t_tool poll PATH COUNT           same with bus_poll_start/bus_poll
 *   t_tool write PATH LISTENERS MSG...
 *                                    wait until LISTENERS processes listen,
 *                                    then broadcast each MSG
 *   t_tool listeners PATH            print how many processes listen */
#include "common.h"

static long remaining;

static int print_message(const char *message, void *data)
{
	(void)data;
	printf("%s\n", message ? message : "listening");
	fflush(stdout);
	return message && --remaining == 0 ? 0 : 1;
}

int main(int argc, char *argv[])
{
	bus_t bus;
	test_name = argc > 1 ? argv[1] : "t_tool";
	watchdog(60);
	if (argc == 3 && strcmp(argv[1], "create") == 0) {
		make_bus(argv[2]);
	} else if (argc == 3 && strcmp(argv[1], "unlink") == 0) {
		OK(bus_unlink(argv[2]));
	} else if (argc == 4 && strcmp(argv[1], "listen") == 0) {
		remaining = atol(argv[3]);
		OK(bus_open(&bus, argv[2], BUS_RDONLY));
		OK(bus_read(&bus, print_message, NULL));
		OK(bus_close(&bus));
	} else if (argc == 4 && strcmp(argv[1], "poll") == 0) {
		remaining = atol(argv[3]);
		OK(bus_open(&bus, argv[2], BUS_RDONLY));
		OK(bus_poll_start(&bus));
		printf("listening\n");
		fflush(stdout);
		while (remaining--) {
			const char *m = bus_poll(&bus, 0);
			if (!m)
				FAIL("bus_poll: %s", strerror(errno));
			printf("%s\n", m);
			fflush(stdout);
		}
		OK(bus_poll_stop(&bus));
		OK(bus_close(&bus));
	} else if (argc >= 4 && strcmp(argv[1], "write") == 0) {
		OK(bus_open(&bus, argv[2], BUS_WRONLY));
		await_sem_at_least(&bus, SEM_S, atoi(argv[3]));
		for (int i = 4; i < argc; i++)
			OK(bus_write(&bus, argv[i], 0));
		OK(bus_close(&bus));
	} else if (argc == 3 && strcmp(argv[1], "listeners") == 0) {
		OK(bus_open(&bus, argv[2], BUS_RDONLY));
		printf("%d\n", sem_value(&bus, SEM_S));
		OK(bus_close(&bus));
	} else {
		fprintf(stderr, "usage: see the comment at the top of t_tool.c\n");
		return 2;
	}
	return 0;
}
