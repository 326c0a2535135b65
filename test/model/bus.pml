/*
 * Promela model of the bus protocol (see PROTOCOL.md, "Operations" and
 * "Races in the original listener, and how to be immune to them").
 *
 * The five System V semaphores S, W, X, Q, N are plain integers. One semop
 * call is one d_step whose first statement is the conjunction of every wait
 * condition of the call (P(a) needs a >= 1, Z(a) needs a == 0) and whose
 * other statements are the effects: the kernel applies a multi-operation
 * semop all at once or not at all, and so does a d_step. SEM_UNDO only
 * matters when a process dies, which this model leaves out.
 *
 * Variants, chosen with `spin -D...` (expected outcome in brackets):
 *
 *   (default)     OUR writer and OUR listener, listeners joining and leaving
 *                 [verifies: no invalid end state (hang), no assertion
 *                 violation (no lost, duplicated, reordered or overwritten
 *                 message)].
 *   -DORIGINAL    the ORIGINAL writer and the ORIGINAL listener from
 *                 PROTOCOL.md, no leaving; use with -DNW=1 -DNL=1 or -DNL=2
 *                 [invalid end state: race 1, S=1 Q=1, writer in Z(S)].
 *   -DSPLIT_REARM our listener with its re-arm split in two calls,
 *                 {Z(N), V(S), P(W)} then {V(Q)}, as the original does it
 *                 [with -DNO_SHIELD -DNO_LEAVE: invalid end state (race 1);
 *                 with the shield it verifies: the shield alone also
 *                 closes race 1 for a listener that is already counted].
 *   -DNO_SHIELD   our writer without the "wait until Q >= S" shield
 *                 [verifies].
 *   -DORIG_WRITER the original writer (P(X) and Z(W) as two calls, no
 *                 shield) with our listeners [verifies: our listener is
 *                 immune whoever the writers are].
 *   -DMIXED       our writer (with the shield) and ORIGINAL listeners
 *                 [invalid end state: the shield is a check, not a lock, so
 *                 an original listener's V(S) ... V(Q) start-up can
 *                 straddle the writer's Q = 0 (race 1 at start-up / race 3),
 *                 and with 2 listeners race 2 remains].
 *   -DNO_LEAVE    our listeners join once (at any moment) and never leave,
 *                 so no hang can be escaped by a leave: every hang shows as
 *                 an invalid end state.
 *   -DSPLIT_LEAVE leave (a) as two calls (try {P(Q), P(S)} with IPC_NOWAIT,
 *                 then {P(S)} on EAGAIN) instead of one atomic step
 *                 [verifies].
 *   -DSTALE_SHIELD the shield as the real code does it (read S, wait for
 *                 Q >= that value, re-read S after a timeout) [verifies].
 *   -DWRITER_GIVEUP our writer's Z(S) may time out once (a deadline or a
 *                 stop request after the message was published), after
 *                 which it releases N and X [assertion violation: a slow
 *                 listener misses the next broadcast].
 *
 * Sizes: NW writers, NL listeners, MSGS broadcasts per writer, JOINS times a
 * listener of our kind may join (it may leave before each re-join).
 *
 * Run (in a scratch directory; test/model.rs does this for the main
 * variants):
 *   spin -a [-D...] bus.pml && gcc -O2 -DSAFETY -DCOLLAPSE -o pan pan.c && ./pan
 *   spin -t -p -g [-D...] bus.pml      # replay a counterexample trail
 *
 * A listener that stops after reading a message (the callback says stop:
 * {P(S)} only) is the "released, not read" case of leave (a) below: the copy
 * is local, so taking it or not changes nothing the others can observe.
 */

#ifndef NW
#define NW 2
#endif
#ifndef NL
#define NL 3
#endif
#ifndef MSGS
#define MSGS 2
#endif
#ifndef JOINS
#define JOINS 2
#endif

byte S = 0;    /* listeners counted                                  */
byte W = 0;    /* listeners between "I have read" and re-arming      */
byte X = 1;    /* writer lock                                        */
byte Q = 0;    /* armed listeners; the writer resets it to release   */
byte N = 0;    /* message in flight                                  */

byte mem = 0;     /* id of the message in shared memory (0: none yet)  */
byte nextid = 0;  /* last id handed out; incremented under X, so ids
                     are increasing in broadcast order                 */

/*
 * The delivery property.
 *
 * member[i]: listener i is "counted": set atomically with its join semop,
 * cleared atomically with its leave step. (A member may be outside S for a
 * while, between its {V(W), P(S)} and its re-arm: it is still a member, and
 * it must not miss a broadcast then either.)
 *
 * A broadcast "counts" for listener i iff the writer's Q = 0 step happens
 * while i is a member. In that same atomic step the writer records
 * pend[i] = id for every member i. Then:
 *  - when listener i copies mem, pend[i] must be non-zero and equal to mem
 *    (no spurious/duplicated read, no overwritten memory), and is cleared;
 *  - a listener leaving while released-but-unread (Q == 0 at its leave) clears
 *    pend[i]: the message is not taken, which is allowed for a leaver;
 *    a listener leaving while still armed (Q > 0) must have pend[i] == 0;
 *  - when the writer's Z(S) returns, every pend[i] must be 0 (each counted
 *    listener has taken its copy or has left): no loss;
 *  - when a writer copies a new message into mem, every pend[i] must be 0:
 *    mem is never overwritten while a counted, released listener has not
 *    yet copied it;
 *  - in order and gap-free: last[i] is the last id read since i joined
 *    (0: none yet); every read after the first of a membership must be
 *    exactly last[i] + 1, since every broadcast during the membership
 *    counts for i.
 */
bool member[NL];
bool gaveup;      /* -DWRITER_GIVEUP: a writer abandoned its Z(S) */
byte pend[NL];
byte last[NL];

#define ALL_PEND_ZERO(i) \
	for (i : 0 .. NL - 1) { assert(pend[i] == 0) }

/* ---------------------------------------------------------------- writers */

#if defined(ORIGINAL) || defined(ORIG_WRITER)
/* P(X); Z(W); copy; V(N); Q = 0; Z(S); P(N); V(X) -- one call each. */
proctype Writer()
{
	byte k = 0, id, i;
	do
	:: k < MSGS ->
		d_step { X >= 1 -> X-- };                    /* P(X) */
		W == 0;                                      /* Z(W) */
		d_step { nextid++; id = nextid;              /* copy */
#ifndef ORIGINAL
			ALL_PEND_ZERO(i);
#endif
			mem = id };
		N++;                                         /* V(N) */
		d_step { Q = 0;                              /* SETVAL Q 0 */
			for (i : 0 .. NL - 1) { if :: member[i] -> pend[i] = id :: else fi } };
		d_step { S == 0 ->                           /* Z(S) */
#ifndef ORIGINAL
			ALL_PEND_ZERO(i);
#endif
			skip };
		d_step { N >= 1 -> N-- };                    /* P(N) */
		X++;                                         /* V(X) */
		k++
	:: else -> break
	od
}
#else
/* {P(X), Z(W)}; shield Q >= S; copy; V(N); Q = 0; Z(S); {P(N), V(X)} */
proctype Writer()
{
	byte k = 0, id, i, s;
	do
	:: k < MSGS ->
		d_step { X >= 1 && W == 0 -> X-- };          /* {P(X), Z(W)} */
#if defined(STALE_SHIELD)
		/* The shield as the real code does it: read s = S, then wait for
		 * Q >= s ({Q -= s, Q += s}, only when s > 0: a semop of 0 would be
		 * a wait-for-zero), re-reading S after a timeout. A timeout only
		 * helps if S changed, so the model re-reads only then: a shield
		 * that can never pass is still a hang. */
		s = S;
		do
		:: Q >= s -> break
		:: s != S -> s = S
		od;
		skip;   /* (a break may not jump into the d_step below) */
#elif !defined(NO_SHIELD)
		Q >= S;                                      /* shield */
#endif
		d_step { nextid++; id = nextid;              /* copy */
			ALL_PEND_ZERO(i);
			mem = id };
		N++;                                         /* V(N) */
		d_step { Q = 0;                              /* SETVAL Q 0 */
			for (i : 0 .. NL - 1) { if :: member[i] -> pend[i] = id :: else fi } };
#ifndef WRITER_GIVEUP
		d_step { S == 0 -> ALL_PEND_ZERO(i) };       /* Z(S) */
#else
		/* A timed (or interruptible) Z(S): the writer may give up after
		 * publishing (at most once over the whole run), then releases N
		 * and X as usual. PROTOCOL.md times only P(X) and Z(W). */
		if
		:: d_step { S == 0 -> ALL_PEND_ZERO(i) }     /* Z(S) */
		:: d_step { !gaveup -> gaveup = true }       /* timed out */
		fi;
#endif
		d_step { N >= 1 -> N--; X++ };               /* {P(N), V(X)} */
		k++
	:: else -> break
	od
}
#endif

/* -------------------------------------------------------------- listeners */

#if defined(ORIGINAL) || defined(MIXED)
/*
 * The original listener: V(S); loop { V(Q); Z(Q); read; V(W); P(S); Z(S);
 * Z(N); V(S); P(W) }. It joins once (at a nondeterministic moment, since
 * its process may be scheduled at any time) and never leaves. Waiting for a
 * message at Z(Q) is a valid place to end; every other wait is not.
 */
proctype Listener(byte me)
{
	byte got;
	d_step { S++; member[me] = true; last[me] = 0 };       /* V(S) */
	do
	:: Q++;                                                /* V(Q) */
end_wait:
		Q == 0;                                            /* Z(Q) */
		d_step { got = mem;                                /* read */
#ifndef ORIGINAL
			assert(pend[me] != 0 && got == pend[me]);
			assert(last[me] == 0 || got == last[me] + 1);
			last[me] = got; pend[me] = 0;
#endif
			skip };
		W++;                                               /* V(W) */
		d_step { S >= 1 -> S-- };                          /* P(S) */
		S == 0;                                            /* Z(S) */
		N == 0;                                            /* Z(N) */
		S++;                                               /* V(S) */
		d_step { W >= 1 -> W-- }                           /* P(W) */
	od
}
#else
/*
 * Our listener. It may join up to JOINS times. At each join it decides
 * nondeterministically whether it may leave during this membership
 * (mayleave). A membership that may not end models a listener that stays
 * forever: it must never be able to hang anybody. (If every armed listener
 * could always leave, no state would ever be terminal and spin could not
 * report a hang at all.) A listener that may leave does so at any moment
 * while armed at Z(Q), or right after its {V(W), P(S)}.
 */
proctype Listener(byte me)
{
	byte j = 0, got;
	bool mayleave;

	do
	:: j < JOINS ->
		j++;
#ifdef NO_LEAVE
		mayleave = false;
#else
		if
		:: mayleave = true
		:: mayleave = false
		fi;
#endif
		/* join: {Z(N), V(S), V(Q)} */
		d_step { N == 0 -> S++; Q++; member[me] = true; last[me] = 0 };
end_armed:
		if
		:: Q == 0 ->                                       /* Z(Q) */
			d_step { got = mem;                            /* copy */
				assert(pend[me] != 0 && got == pend[me]);
				assert(last[me] == 0 || got == last[me] + 1);
				last[me] = got; pend[me] = 0 };
			d_step { S >= 1 -> W++; S-- };                 /* {V(W), P(S)} */
			if
#ifdef SPLIT_REARM
			:: d_step { N == 0 && W >= 1 -> S++; W-- };    /* {Z(N), V(S), P(W)} */
				Q++;                                       /* V(Q) */
				goto end_armed
#else
			:: d_step { N == 0 && W >= 1 ->                /* {Z(N), V(S), P(W), V(Q)} */
				S++; W--; Q++ };
				goto end_armed
#endif
			:: mayleave ->                                 /* leave (b): {P(W)} */
				d_step { W >= 1 -> W--; member[me] = false }
			fi
#ifndef SPLIT_LEAVE
		:: mayleave ->                                     /* leave (a) from Z(Q) */
			d_step {
				if
				:: Q > 0 ->                                /* still armed: {P(S), P(Q)} */
					assert(pend[me] == 0);
					S--; Q--
				:: else ->                                 /* released, not read: {P(S)} */
					assert(S >= 1);
					S--; pend[me] = 0
				fi;
				member[me] = false }
#else
		/* Leave (a) as the real code can do it, in two calls: first
		 * {P(Q) IPC_NOWAIT, P(S)}; if that fails with EAGAIN (Q was 0,
		 * i.e. a writer released us), then {P(S)} as a second call, with
		 * anything interleaved in between. */
		:: mayleave ->
			if
			:: d_step { Q > 0 ->                           /* {P(Q) nowait, P(S)} succeeded */
					assert(pend[me] == 0);
					S--; Q--; member[me] = false }
			:: Q == 0 ->                                   /* ... failed with EAGAIN */
				d_step { S >= 1 -> S--; pend[me] = 0; member[me] = false }  /* {P(S)} */
			fi
#endif
		fi
	:: else -> break
	od
}
#endif

init
{
	byte i;
	atomic {
		for (i : 1 .. NW) { run Writer() };
		for (i : 0 .. NL - 1) { run Listener(i) }
	}
}
