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
 * Variants, chosen with `spin -D...`:
 *
 *   (default)     OUR writer and OUR listener; must verify with no error:
 *                 no invalid end state (deadlock), no assertion violation
 *                 (no lost, duplicated, reordered or overwritten message).
 *   -DORIGINAL    the ORIGINAL writer and the ORIGINAL listener from
 *                 PROTOCOL.md, no joining/leaving; spin must find an
 *                 invalid end state (the races of the original listener).
 *   -DSPLIT_REARM our listener, but its re-arm split in two calls
 *                 {Z(N), V(S), P(W)} then {V(Q)} (as the original does).
 *   -DNO_SHIELD   our writer without the "wait until Q >= S" shield.
 *   -DORIG_WRITER the original writer (P(X) and Z(W) as two calls, no
 *                 shield) with our listeners (claim: our listener is immune
 *                 whoever the writers are).
 *   -DMIXED       our writer (with shield) and ORIGINAL listeners.
 *
 * Sizes: NW writers, NL listeners, MSGS broadcasts per writer, JOINS times a
 * listener of our kind may join (it may leave before each re-join).
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
	byte k = 0, id, i;
	do
	:: k < MSGS ->
		d_step { X >= 1 && W == 0 -> X-- };          /* {P(X), Z(W)} */
#ifndef NO_SHIELD
		Q >= S;                                      /* shield */
#endif
		d_step { nextid++; id = nextid;              /* copy */
			ALL_PEND_ZERO(i);
			mem = id };
		N++;                                         /* V(N) */
		d_step { Q = 0;                              /* SETVAL Q 0 */
			for (i : 0 .. NL - 1) { if :: member[i] -> pend[i] = id :: else fi } };
		d_step { S == 0 -> ALL_PEND_ZERO(i) };       /* Z(S) */
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
		if
		:: mayleave = true
		:: mayleave = false
		fi;
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
