/*
 * Promela model of the bus protocol (PROTOCOL.md, "Operations" and "Races
 * in the original listener, and how to be immune to them") as src/writer.rs
 * and src/listener.rs implement it, and of the designs it replaced.
 *
 * The five System V semaphores S, W, X, Q, N are plain integers. One semop
 * call is one d_step whose first statement is the conjunction of every wait
 * condition of the call (P(a) needs a >= 1, Z(a) needs a == 0) and whose
 * other statements are the effects: the kernel applies a multi-operation
 * semop all at once or not at all, and so does a d_step.
 *
 * The listeners' wait for a message is modelled as Linux does it. A
 * listener that has raised Q is first "awake" (between the semop that
 * raised Q and its wait, spinning with IPC_NOWAIT, or back from EINTR): it
 * passes only if it finds the wait satisfied when it runs. Once its wait
 * blocks it is "asleep" (asleep[i]), and counted by GETZCNT(Q) +
 * GETNCNT(N) (zcnt). Whatever satisfies the wait (the writer's V(N) or
 * SETVAL Q 0, a leaver's P(Q)) completes the wait of every sleeper at that
 * instant (WAKE_ZQ): rel[i] is set, and the sleeper takes the message even
 * if Q is raised again before it runs. rel[i] stays set until it has
 * copied mem.
 *
 * A writer killed after zeroing Q (-DWRITER_DIES) has N lowered by the
 * kernel's undo while the listeners are still mid-round. A listener awake
 * at the zeroing was not released by it; if a fast listener re-arms (or
 * one joins) before it looks, it sleeps on a Q that holds none of its
 * raise: it is "stranded", and only a later zeroing frees it.
 *
 * The default (no -D) is the code:
 *  - writer (src/writer.rs): {P(X), Z(W)}; shield: wait until W == 0 and
 *    (Q >= S, or GETZCNT(Q) + GETNCNT(N) > Q, or SHIELD_LIMIT spent),
 *    in one snapshot; copy; V(N); SETVAL Q 0; Z(S) (never abandoned: a
 *    thread finishes it); {P(N), V(X)}. Time is not modelled: the
 *    SHIELD_LIMIT escape may fire at any moment while W == 0, so the
 *    shield is "W == 0"; without a death it asserts that Q >= S anyway;
 *  - listener (src/listener.rs): join {Z(N), V(S), V(Q)}; wait
 *    {Z(Q), N -= 1, N += 1, V(W)}; copy; acknowledge {P(S)}; re-arm
 *    {Z(N), V(S), P(W), V(Q)}; leave {P(S), P(Q)} (or {P(S)} if Q is 0,
 *    both as one step) before the wait completes, {P(W)} after the
 *    acknowledgement.
 *
 * Variants, chosen with `spin -D...` (test/model.rs runs each one it uses,
 * with the outcome it expects):
 *   -DORIGINAL        the original writer and listener (PROTOCOL.md), listeners never leave.
 *   -DORIG_WRITER     the original writer (P(X), Z(W), ... one call each, no shield) with our listeners.
 *   -DOLD_WAIT        our listener with the wait it replaced: Z(Q) alone, acknowledgement {V(W), P(S)}.
 *   -DSPLIT_REARM     our listener's re-arm as two calls, {Z(N), V(S), P(W)} then {V(Q)}.
 *   -DSPLIT_LEAVE     the leave before the wait as coded: {P(S), P(Q)} IPC_NOWAIT, on EAGAIN {P(S)}.
 *   -DNO_LEAVE        listeners join once and never leave (no hang can be escaped by leaving).
 *   -DNOWAIT_POLLERS  a membership may be a poller that only polls with IPC_NOWAIT: never asleep.
 *   -DLISTENER_DIES   a listener that may leave may instead be killed (undo: S, W; its Q raise stays).
 *   -DWRITE_NOWAIT    the writer's BUS_NOWAIT path, {P(X)} then {Z(W)}: includes the one-call behaviours.
 *   -DNO_SHIELD       our writer without the shield.
 *   -DSHIELD_AS_CODED the shield's loop as coded: GETALL, then GETZCNT(Q) and GETNCNT(N) as later calls.
 *   -DNO_TIME_ESCAPE  the shield without its SHIELD_LIMIT escape (count escape only).
 *   -DNO_ESCAPE       the shield without any escape: W == 0 and Q >= S.
 *   -DNO_W_IN_SHIELD  the shield without its W == 0 condition.
 *   -DWRITER_GIVEUP   our writer may abandon its Z(S) once and release N and X (the code never does).
 *   -DWRITER_DIES     a writer may be killed while it holds X, at most MAXDEATHS times in all.
 *   -DHANDOVER        listener 0 may hand its place to listener NL-1, another process (a new
 *                     port program): after an acknowledgement it stops before re-arming,
 *                     holding W; NL-1 joins; then 0 leaves {P(W)}. NL-1's stream continues 0's:
 *                     no message lost or repeated across the switch, and nobody wedged.
 *   -DHANDOVER_ARMED  the same handover from where Subscription::detach stops (armed, counted,
 *                     Q raised): the successor cannot join while a writer waits for 0's
 *                     acknowledgement, and 0 leaves only after it joined.
 *
 * Writer death: a writer may be killed before any of its steps after
 * {P(X), Z(W)}, or while blocked in the shield or in Z(S). The kernel's undo,
 * applied at the death, gives X back and lowers N if the writer had raised
 * it; the dead writer does nothing more. Its message (if it had copied it)
 * is "dead": the delivery property is relaxed for it only (it may reach
 * some listeners, or none; a listener may skip it). Nothing else is
 * relaxed: in particular no writer may overwrite mem while a listener
 * released for the dead message has not copied it.
 *
 * Sizes: NW writers, NL listeners, MSGS broadcasts per writer, JOINS times a
 * listener of ours may join (it may leave before each re-join), MAXDEATHS
 * writer deaths in all.
 *
 * Run (in a scratch directory; test/model.rs does this for each variant
 * it tests):
 *   spin -a [-D...] bus.pml && gcc -O2 -DSAFETY -DCOLLAPSE -o pan pan.c && ./pan
 *   spin -t -p -g [-D...] bus.pml      # replay a counterexample trail
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
#define JOINS 1
#endif
#ifndef MAXDEATHS
#define MAXDEATHS 1
#endif

#ifdef HANDOVER_ARMED
#define HANDOVER
#endif

/* the original listener waits with Z(Q) alone */
#if defined(ORIGINAL) && !defined(OLD_WAIT)
#define OLD_WAIT
#endif

byte S = 0;    /* listeners counted                                  */
byte W = 0;    /* listeners between "I have read" and re-arming      */
byte X = 1;    /* writer lock                                        */
byte Q = 0;    /* armed listeners; the writer resets it to release   */
byte N = 0;    /* message in flight                                  */

byte mem = 0;     /* id of the message in shared memory (0: none yet)  */
byte nextid = 0;  /* last id handed out; incremented under X, so ids
                     are increasing in broadcast order                 */

/* the wait for a message as the kernel does it (see the top) */
bool asleep[NL];  /* asleep in its wait for a message                 */
bool rel[NL];     /* its wait has returned or was completed by the
                     kernel; mem not yet copied                       */
byte zcnt = 0;    /* the number of asleep[i]: GETZCNT(Q) + GETNCNT(N) */

/*
 * The delivery property.
 *
 * member[i]: listener i is "counted": set atomically with its join semop,
 * cleared atomically with its leave step. (A member may be outside S for a
 * while, between its acknowledgement and its re-arm: it is still a member,
 * and it must not miss a broadcast then either.)
 *
 * A broadcast "counts" for listener i iff the writer's Q = 0 step happens
 * while i is a member. In that same atomic step the writer records
 * pend[i] = id for every member i. Then:
 *  - when listener i copies mem, pend[i] must be non-zero and equal to mem
 *    (no spurious/duplicated read, no overwritten memory), and is cleared;
 *  - a listener leaving while awake and Q == 0 (released, not read) clears
 *    pend[i]: the message is not taken, which is allowed for a leaver;
 *    a listener leaving while Q > 0 must have pend[i] == 0 (or dead);
 *  - when the writer's Z(S) returns, every pend[i] must be 0 (each counted
 *    listener has taken its copy or has left): no loss;
 *  - when a writer copies a new message into mem, no listener may be
 *    between the completion of its wait and its copy (rel[i]), and every
 *    pend[i] must be 0, or dead for a listener that was never released
 *    for the dead message (stranded): mem is never overwritten under a
 *    released listener;
 *  - in order and gap-free: last[i] is the last id read since i joined
 *    (0: none yet); every id between last[i] and the one read must be
 *    dead, since every other broadcast during the membership counts for i.
 */
bool member[NL];
byte pend[NL];
byte last[NL];
#ifndef OLD_WAIT
byte early[NL];   /* see CHECK_COPY */
#endif

bool gaveup;      /* -DWRITER_GIVEUP: a writer abandoned its Z(S)      */
#ifdef HANDOVER
bool held;        /* listener 0 stopped for the handover, holding W    */
bool succeeded;   /* listener NL-1 has joined in its place             */
#endif
byte deaths = 0;  /* -DWRITER_DIES: writers killed so far              */
int dead = 0;     /* bit k: message k is dead (its writer died after
                     copying it); ids stay below 31 (NW * MSGS < 31)   */
#define IS_DEAD(k) (((dead >> (k)) & 1) == 1)

#define ALL_PEND_ZERO(i) \
	for (i : 0 .. NL - 1) { assert(pend[i] == 0) }

/* mem may be overwritten: nobody released is still to copy it */
#define CHECK_OVERWRITE(i) \
	for (i : 0 .. NL - 1) { assert(!rel[i] && (pend[i] == 0 || IS_DEAD(pend[i]))) }

/* listener me has copied got */
#ifdef OLD_WAIT
#define CHECK_COPY(me, got) \
	assert(pend[me] != 0 && got == pend[me]); \
	CHECK_ORDER(me, got)
#else
/* A sleeper with Q == 0 (a stranded one whose raise a leaver took) is
 * released by the next writer's V(N), before it zeroes Q, and copies that
 * message (complete: V(N) comes after the copy): early[me] = id, and the
 * zeroing does not count it for me again. */
#define CHECK_COPY(me, got) \
	if \
	:: got != pend[me] && (pend[me] == 0 || IS_DEAD(pend[me])) && \
	   got == nextid && (N > 0 || IS_DEAD(got)) -> early[me] = got \
	:: else -> assert(pend[me] != 0 && got == pend[me]) \
	fi; \
	CHECK_ORDER(me, got)
#endif

/* in order: every id between the last one read and this one is dead */
#define CHECK_ORDER(me, got) \
	assert(last[me] == 0 || got > last[me]); \
	if \
	:: last[me] != 0 -> \
		for (i : last[me] + 1 .. got - 1) { assert(IS_DEAD(i)) } \
	:: else \
	fi; \
	last[me] = got; pend[me] = 0

/*
 * The condition a listener waits for: Q == 0 and N >= 1
 * ({Z(Q), N -= 1, N += 1, V(W)}: released only while a message is in
 * flight, so a leaver's P(Q) that takes the last raise releases nobody
 * while N == 0; such a sleeper blocks on N, and GETNCNT(N) counts it), or
 * with -DOLD_WAIT Q == 0 (Z(Q)). The default wait also raises W.
 */
#ifdef OLD_WAIT
#define TAKE_OK (Q == 0)
#define TAKE_W skip
#define TAKE_W_UNDO skip
#else
#define TAKE_OK (Q == 0 && N >= 1)
#define TAKE_W W++
#define TAKE_W_UNDO W--
#endif

/* Q or N has just changed: the kernel completes every sleeper whose wait
 * is now satisfied */
#define WAKE_ZQ(i) \
	if \
	:: TAKE_OK -> \
		for (i : 0 .. NL - 1) { \
			if \
			:: asleep[i] -> asleep[i] = false; rel[i] = true; TAKE_W \
			:: else \
			fi \
		}; \
		zcnt = 0 \
	:: else \
	fi

/* the writer's SETVAL Q 0 (message id) */
#ifdef OLD_WAIT
#define ZERO_Q(i, id) \
	Q = 0; \
	WAKE_ZQ(i); \
	for (i : 0 .. NL - 1) { if :: member[i] -> pend[i] = id :: else fi }
#else
#define ZERO_Q(i, id) \
	Q = 0; \
	WAKE_ZQ(i); \
	for (i : 0 .. NL - 1) { \
		if \
		:: member[i] && early[i] != id -> pend[i] = id \
		:: else \
		fi; \
		early[i] = 0 \
	}
#endif

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
			CHECK_OVERWRITE(i);
#endif
			mem = id };
		d_step { N++; WAKE_ZQ(i) };                  /* V(N) */
		d_step { ZERO_Q(i, id) };                    /* SETVAL Q 0 */
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

/*
 * The shield's escapes, for Q < S: the count escape (more sleepers than Q
 * holds raises) and the SHIELD_LIMIT escape (any moment: time is not
 * modelled, and 1 s is long enough for anything to have happened).
 */
#if defined(NO_ESCAPE)
#define COUNT_ESCAPE(z, q) false
#define TIME_ESCAPE false
#elif defined(NO_TIME_ESCAPE)
#define COUNT_ESCAPE(z, q) (z > q)
#define TIME_ESCAPE false
#else
#define COUNT_ESCAPE(z, q) (z > q)
#define TIME_ESCAPE true
#endif
#ifdef NO_W_IN_SHIELD
#define SHIELD_W true
#else
#define SHIELD_W (W == 0)
#endif
/* the shield's pass condition, in one snapshot */
#define SHIELD (SHIELD_W && (Q >= S || COUNT_ESCAPE(zcnt, Q) || TIME_ESCAPE))

/* without a death nobody is stranded: the escapes are never needed */
#if defined(WRITER_DIES) || defined(WRITER_GIVEUP)
#define NO_ESCAPE_NEEDED(ok) skip
#else
#define NO_ESCAPE_NEEDED(ok) assert(ok)
#endif

/*
 * DIE(copied, n): an alternative to the writer's next step (it is killed
 * before it, or while blocked in it). The kernel undoes its SEM_UNDO
 * adjustments at once: P(X) (X += 1) and, if n, V(N) (N -= 1). If it had
 * copied its message, that message is dead.
 */
#ifdef WRITER_DIES
#define DIE(copied, n) \
	:: d_step { deaths < MAXDEATHS -> \
		deaths++; X++; \
		if :: n -> N-- :: else fi; \
		if :: copied -> dead = dead | (1 << id) :: else fi }; \
	   goto died
#else
#define DIE(copied, n)
#endif

/* {P(X), Z(W)}; shield; copy; V(N); SETVAL Q 0; Z(S); {P(N), V(X)} */
proctype Writer()
{
	byte k = 0, id, i;
#ifdef SHIELD_AS_CODED
	byte s, q, z, w;
#endif
	do
	:: k < MSGS ->
#ifndef WRITE_NOWAIT
		d_step { X >= 1 && W == 0 -> X-- };          /* {P(X), Z(W)} */
#else
		d_step { X >= 1 -> X-- };                    /* {P(X)} IPC_NOWAIT */
		if
		:: W == 0                                    /* {Z(W)} */
		DIE(false, false)
		fi;
#endif
#if defined(NO_SHIELD)
		/* no shield */
#elif !defined(SHIELD_AS_CODED)
		if
		:: d_step { SHIELD -> NO_ESCAPE_NEEDED(Q >= S) }   /* shield */
		DIE(false, false)
		fi;
#else
		/* The shield's loop as coded: GETALL (one snapshot of s = S,
		 * w = W, q = Q): pass if w == 0 and q >= s; else, if w == 0,
		 * GETZCNT(Q) then GETNCNT(N) (two later calls; a sleeper blocks on
		 * Q while Q > 0, else on N): pass if their sum z > q, or if
		 * SHIELD_LIMIT is spent; else the semop {Z(W), Q -= s, Q += s}
		 * (for s == 0 that is {Z(W), Z(Q)}) with a 5 ms timeout, and
		 * again. A timeout only helps if something changed, so the model
		 * reads again only then: a shield that can never pass is still a
		 * hang. z = 255: not read. A death while reading is the same as
		 * one at the semop. */
		do
		:: d_step { s = S; w = W; q = Q; z = 255 };  /* GETALL */
			if
			:: w == 0 && q >= s -> break
			:: w == 0 && q < s ->
				NO_ESCAPE_NEEDED(false);
				d_step { z = (Q > 0 -> zcnt : 0) };          /* GETZCNT(Q) */
				d_step { z = z + (Q == 0 -> zcnt : 0) };     /* GETNCNT(N) */
				if
				:: COUNT_ESCAPE(z, q) -> break
				:: !COUNT_ESCAPE(z, q) && TIME_ESCAPE -> break  /* SHIELD_LIMIT spent */
				:: !COUNT_ESCAPE(z, q)                          /* not yet */
				fi
			:: else
			fi;
			if                                       /* {Z(W), Q -= s, Q += s} */
			:: d_step { W == 0 && ((s > 0 && Q >= s) || (s == 0 && Q == 0)) -> skip };
				break
			:: d_step { S != s || W != w || Q != q || (z != 255 && zcnt != z) -> skip }
			DIE(false, false)                        /* (timed out: again) */
			fi
		od;
#endif
		if
		:: d_step { nextid++; id = nextid;           /* copy */
#ifdef SHIELD_AS_CODED
			s = 0; q = 0; z = 0; w = 0;
#endif
			CHECK_OVERWRITE(i);
			mem = id }
		DIE(false, false)
		fi;
		if
		:: d_step { N++; WAKE_ZQ(i) }                /* V(N) */
		DIE(true, false)
		fi;
		if
		:: d_step { ZERO_Q(i, id) }                  /* SETVAL Q 0 */
		DIE(true, true)
		fi;
		if
		:: d_step { S == 0 -> ALL_PEND_ZERO(i) }     /* Z(S) */
#ifdef WRITER_GIVEUP
		/* timed out, stopped (at most once in the whole run): releases N
		 * and X below without waiting for the round to end */
		:: d_step { !gaveup -> gaveup = true }
#endif
		DIE(true, true)
		fi;
		d_step { N >= 1 -> N--; X++ };               /* {P(N), V(X)} */
		k++
	:: else -> break
	od;
died:
	skip
}
#endif

/* -------------------------------------------------------------- listeners */

#ifdef ORIGINAL
/*
 * The original listener: V(S); loop { V(Q); Z(Q); read; V(W); P(S); Z(S);
 * Z(N); V(S); P(W) }. It joins once (at a nondeterministic moment, since
 * its process may be scheduled at any time) and never leaves. Waiting for a
 * message at Z(Q) is a valid place to end; every other wait is not.
 */
proctype Listener(byte me)
{
	byte got, i;
	d_step { S++; member[me] = true; last[me] = 0 };       /* V(S) */
	do
	:: Q++;                                                /* V(Q) */
		if                                                 /* Z(Q) */
		:: d_step { Q == 0 -> rel[me] = true }             /* returns */
		:: d_step { Q > 0 -> asleep[me] = true; zcnt++ }   /* sleeps */
		fi;
end_wait:
		d_step { rel[me] -> got = mem; rel[me] = false };  /* read */
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
 * Leaving while armed (the wait has not completed: timed out, stopped):
 * {P(S), P(Q)} with IPC_NOWAIT, or {P(S)} if Q is 0 (a writer released it:
 * it does not take that message, which a leaver may).
 */
#define LEAVE_ARMED_Q(me) \
	assert(pend[me] == 0 || IS_DEAD(pend[me])); \
	S--; Q--; pend[me] = 0; member[me] = false; \
	WAKE_ZQ(i)
#define LEAVE_ARMED_NO_Q(me) \
	assert(S >= 1); \
	S--; pend[me] = 0; member[me] = false

/*
 * Our listener. It may join up to JOINS times. At each join it decides
 * nondeterministically whether it may leave during this membership
 * (mayleave). A membership that may not end models a listener that stays
 * forever: it must never be able to hang anybody. (If every armed listener
 * could always leave, no state would ever be terminal and spin could not
 * report a hang at all.) A listener that may leave does so at any moment
 * while awake (a sleeper is first interrupted: a deadline, a stop, or a
 * signal after which it waits again), or right after its acknowledgement.
 */
proctype Listener(byte me)
{
	byte j = 0, got, i;
	bool mayleave, sleeps;

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
#ifdef NOWAIT_POLLERS
		if
		:: sleeps = true
		:: sleeps = false
		fi;
#else
		sleeps = true;
#endif
#ifndef HANDOVER
		/* join: {Z(N), V(S), V(Q)} */
		d_step { N == 0 -> S++; Q++; member[me] = true; last[me] = 0 };
#else
		if
		:: me == NL - 1 && j == 1 ->
			/* the successor's first join, once listener 0 holds W (it may
			 * never: a valid end): its stream continues 0's */
end_successor:
			d_step { held && N == 0 ->
				S++; Q++; member[me] = true; last[me] = last[0];
				succeeded = true }
		:: !(me == NL - 1 && j == 1) ->
			d_step { N == 0 -> S++; Q++; member[me] = true; last[me] = 0 }
		fi;
#endif
armed:	/* Q raised, awake: about to wait (or spinning) */
end_armed:	/* (a valid end for a poller that never sleeps) */
		if
		:: d_step { TAKE_OK -> rel[me] = true; TAKE_W }    /* wait returns */
		:: d_step { sleeps && !TAKE_OK ->                  /* wait sleeps */
				asleep[me] = true; zcnt++ }
		:: d_step { mayleave && Q > 0 -> LEAVE_ARMED_Q(me) };  /* {P(S), P(Q)} */
			goto left
#ifndef SPLIT_LEAVE
		:: d_step { mayleave && Q == 0 -> LEAVE_ARMED_NO_Q(me) };  /* {P(S)} */
			goto left
#else
		:: d_step { mayleave && Q == 0 -> skip };          /* ... EAGAIN */
			d_step { LEAVE_ARMED_NO_Q(me) };               /* {P(S)} */
			goto left
#endif
#ifdef LISTENER_DIES
		:: d_step { mayleave ->                            /* killed: undo V(S) */
				S--; pend[me] = 0; member[me] = false };
			goto left
#endif
#ifdef HANDOVER_ARMED
		:: d_step { me == 0 && !held -> held = true };     /* stop, armed */
			if                                             /* leave once replaced */
			:: d_step { succeeded && Q > 0 -> LEAVE_ARMED_Q(me) }
			:: d_step { succeeded && Q == 0 -> LEAVE_ARMED_NO_Q(me) }
			fi;
			goto left
#endif
		fi;
end_waiting:
		if
		:: d_step { rel[me] -> got = mem;                  /* copy */
				CHECK_COPY(me, got);
				rel[me] = false }
		:: d_step { mayleave && asleep[me] ->              /* interrupted */
				asleep[me] = false; zcnt-- };
			goto armed
#ifdef LISTENER_DIES
		:: d_step { mayleave && rel[me] ->                 /* killed: undo V(S), V(W) */
				rel[me] = false; S--; TAKE_W_UNDO;
				pend[me] = 0; member[me] = false };
			goto left
#endif
		fi;
#ifdef OLD_WAIT
		d_step { S >= 1 -> W++; S-- };                     /* {V(W), P(S)} */
#else
		d_step { S >= 1 -> S-- };                          /* {P(S)} */
#endif
		if
#ifdef SPLIT_REARM
		:: d_step { N == 0 && W >= 1 -> S++; W-- };        /* {Z(N), V(S), P(W)} */
			Q++;                                           /* V(Q) */
			goto armed
#else
		:: d_step { N == 0 && W >= 1 ->                    /* {Z(N), V(S), P(W), V(Q)} */
				S++; W--; Q++ };
			goto armed
#endif
		:: d_step { mayleave && W >= 1 ->                  /* leave: {P(W)} */
				W--; member[me] = false };
			goto left
#if defined(HANDOVER) && !defined(HANDOVER_ARMED)
		:: d_step { me == 0 && !held -> held = true };     /* stop, holding W */
			d_step { succeeded && W >= 1 ->                /* then leave: {P(W)} */
				W--; member[me] = false };
			goto left
#endif
		fi;
left:
		skip
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
