%% @doc One subscriber's stream, as its bus_srv feeds it: what is sent to
%% the subscriber's mailbox now, what is held for it, what is dropped, and
%% the notices that say so. Pure but for the sends to the subscriber and
%% the sampling of its mailbox; bus_srv owns one per subscriber.
%%
%% The stream is, in order: `{bus, Name, Message}', `{bus_gap, Name}' (the
%% bus_srv may have missed messages), `{bus_dropped, Name, Count}' (Count
%% messages were discarded here, right there in the stream) and
%% `{bus_passive, Name}' (the credit given with `active' is used up).
%%
%% A subscriber is ready when it has credit (active true, or a count of
%% messages left) and is not congested (in its last sample its mailbox
%% held more than max_mailbox messages; or, on another node, the
%% connection was too busy to take a send without suspending its bus_srv,
%% or down). Then, with nothing held, items
%% go straight to its mailbox. Otherwise they are held, at most max_queue
%% messages (notices do not count: consecutive ones merge, so they are at
%% most one per held message, plus one); beyond that, overflow `drop'
%% discards and counts them, overflow `block' is bus_srv's to honour: it
%% takes no more from the bus than room/1 allows.
%%
%% Notices never use credit, and none is sent while the subscriber has no
%% credit: a drop notice with nothing after it waits for the next
%% activation.
-module(bus_flow).

-export([options/1, defaults/0, new/3, set_options/2, rename/2, feed/2, activate/2,
         recheck/1, drain/1]).
-export([lane_budget/1, sent_by_lane/2]).
-export([name/1, room/1, is_congested/1, is_passive/1, delivered/1, dropped/1, info/1,
         persisted/1]).

-export_type([flow/0, options/0, active/0, item/0]).

%% Defaults, see the README (flow control): a stuck subscriber costs its
%% node at most ?MAX_QUEUE held + ?MAX_MAILBOX + ?SAMPLE_EVERY mailbox
%% messages.
-define(MAX_QUEUE, 1000).
-define(MAX_MAILBOX, 1000).
-define(OVERFLOW, drop).
%% The subscriber's mailbox is sampled after this many messages sent to it.
-define(SAMPLE_EVERY, 64).

-type active() :: true | false | once | pos_integer().
-type options() :: #{active := true | false | pos_integer(),
                     max_queue := pos_integer(),
                     max_mailbox := pos_integer(),
                     overflow := drop | block}.
%% What bus_srv feeds: a message or a gap (messages may be missing here).
-type item() :: {message, binary()} | gap.
%% What is held: items and drop notices.
-type held() :: item() | {dropped, pos_integer()}.

-record(flow, {
    pid :: pid(),
    name :: term(),
    %% true: push; N > 0: that many messages left; 0: passive.
    active = true :: true | non_neg_integer(),
    max_queue = ?MAX_QUEUE :: pos_integer(),
    max_mailbox = ?MAX_MAILBOX :: pos_integer(),
    overflow = ?OVERFLOW :: drop | block,
    held = queue:new() :: queue:queue(held()),
    %% Messages in held (notices not counted).
    queued = 0 :: non_neg_integer(),
    %% Messages dropped since the last one held: the next notice's count.
    pending = 0 :: non_neg_integer(),
    delivered = 0 :: non_neg_integer(),
    dropped = 0 :: non_neg_integer(),
    %% Messages sent since the mailbox was last sampled.
    sends = 0 :: non_neg_integer(),
    congested = false :: boolean()
}).

-opaque flow() :: #flow{}.

%% The options of bus:subscribe/2 (a map or a proplist), completed with
%% the defaults; error for anything else.
-spec options(map() | list()) -> {ok, options()} | error.
options(Options) when is_map(Options) ->
    options(maps:to_list(Options));
options(Options) when is_list(Options) ->
    try lists:foldl(fun option/2, defaults(), Options) of
        Map -> {ok, Map}
    catch
        %% (An improper list fails in lists:foldl/3.)
        _:_ -> error
    end;
options(_) ->
    error.

%% The defaults: the constants above, or the application environment's
%% `subscription_defaults' (a map of the same keys) where it sets them.
-spec defaults() -> options().
defaults() ->
    Base = #{active => true, max_queue => ?MAX_QUEUE, max_mailbox => ?MAX_MAILBOX,
             overflow => ?OVERFLOW},
    Env = application:get_env(bus, subscription_defaults, #{}),
    try maps:fold(fun(K, V, Acc) -> option({K, V}, Acc) end, Base, Env)
    catch
        _:_ -> Base
    end.

option({active, A}, Acc) when is_boolean(A) -> Acc#{active => A};
option({active, once}, Acc) -> Acc#{active => 1};
option({active, N}, Acc) when is_integer(N), N > 0 -> Acc#{active => N};
option({max_queue, N}, Acc) when is_integer(N), N > 0 -> Acc#{max_queue => N};
option({max_mailbox, N}, Acc) when is_integer(N), N > 0 -> Acc#{max_mailbox => N};
option({overflow, O}, Acc) when O =:= drop; O =:= block -> Acc#{overflow => O};
option(_, _) -> throw(badarg).

-spec new(pid(), term(), options()) -> flow().
new(Pid, Name, Options) ->
    set_options(Options, #flow{pid = Pid, name = Name}).

%% New options (a second subscribe): what is held stays held.
-spec set_options(options(), flow()) -> flow().
set_options(#{active := A, max_queue := Q, max_mailbox := M, overflow := O}, F) ->
    F1 = F#flow{max_queue = Q, max_mailbox = M, overflow = O},
    flush(F1#flow{active = case A of true -> true; false -> 0; N -> N end}).

%% The name to use in what is sent (a second subscribe may change it).
-spec rename(term(), flow()) -> flow().
rename(Name, F) ->
    F#flow{name = Name}.

%% Feeds items to the subscriber, in order.
-spec feed([item()], flow()) -> flow().
feed([], F) ->
    F;
feed(Items, F = #flow{active = true, congested = false, pending = 0, held = Held,
                      pid = Pid, name = Name, sends = Sends}) when node(Pid) =:= node() ->
    case queue:is_empty(Held) of
        true -> push(Items, Pid, Name, Sends, 0, F);
        false -> feed_one(Items, F)
    end;
feed(Items, F) ->
    feed_one(Items, F).

feed_one([Item | Rest], F) ->
    feed(Rest, add(Item, F)).

%% The common case, pushing with nothing held: messages straight to the
%% mailbox, the flow updated once, until the next sample is due.
push([{message, Message} | Rest], Pid, Name, Sends, N, F) when Sends < ?SAMPLE_EVERY - 1 ->
    Pid ! {bus, Name, Message},
    push(Rest, Pid, Name, Sends + 1, N + 1, F);
push(Items, _Pid, _Name, Sends, N, F = #flow{delivered = D}) ->
    F1 = F#flow{sends = Sends, delivered = D + N},
    case Items of
        [] -> F1;
        _ -> feed_one(Items, F1)
    end.

add(Item, F = #flow{congested = false, pending = 0, active = A, held = Held})
  when A =:= true; A > 0 ->
    case queue:is_empty(Held) of
        true -> deliver(Item, F);
        false -> hold(Item, F)
    end;
add(Item, F) ->
    hold(Item, F).

hold(gap, F = #flow{held = Held}) ->
    case queue:peek_r(Held) of
        {value, gap} -> F;
        _ -> F#flow{held = queue:in(gap, Held)}
    end;
hold(Message, F = #flow{queued = N, max_queue = Max, held = Held, pending = P})
  when N < Max; F#flow.overflow =:= block ->
    %% (block goes over max_queue only for what a listener that ended had
    %% queued: bus_srv takes no more than room/1 otherwise.)
    Held1 = case P of
        0 -> Held;
        _ -> queue:in({dropped, P}, Held)
    end,
    F#flow{held = queue:in(Message, Held1), queued = N + 1, pending = 0};
hold({message, _}, F = #flow{pending = P, dropped = D}) ->
    F#flow{pending = P + 1, dropped = D + 1}.

%% Sends one item to the subscriber; a message uses credit, and the last
%% credit is followed by the passive notice. A subscriber on another node
%% whose connection is busy (or down) is congested: the item goes back to
%% the head of what is held, and is sent again at the next recheck.
deliver(Item, F = #flow{pid = Pid, name = Name}) ->
    case send(Pid, notice(Item, Name)) of
        ok -> delivered(Item, F);
        busy -> requeue(Item, F)
    end.

notice({message, Message}, Name) -> {bus, Name, Message};
notice(gap, Name) -> {bus_gap, Name};
notice({dropped, N}, Name) -> {bus_dropped, Name, N}.

delivered({message, _}, F = #flow{pid = Pid, name = Name, active = A, sends = S,
                                  delivered = D}) ->
    A1 = case A of
        true -> true;
        %% (To another node: sent even if the connection just became
        %% busy, which can only delay this process briefly.)
        1 -> _ = erlang:send(Pid, {bus_passive, Name}, [noconnect]), 0;
        _ -> A - 1
    end,
    sample_if_due(F#flow{active = A1, delivered = D + 1, sends = S + 1});
delivered(_Notice, F) ->
    F.

requeue({dropped, N}, F = #flow{pending = P, held = Held}) ->
    case queue:is_empty(Held) of
        %% The notice of drops with nothing after them: pending again.
        true -> F#flow{pending = P + N, congested = true};
        false -> F#flow{held = queue:in_r({dropped, N}, Held), congested = true}
    end;
requeue(Item = {message, _}, F = #flow{held = Held, queued = Q}) ->
    F#flow{held = queue:in_r(Item, Held), queued = Q + 1, congested = true};
requeue(Item, F = #flow{held = Held}) ->
    F#flow{held = queue:in_r(Item, Held), congested = true}.

%% A local process always takes a message; the connection to another node
%% may be busy (the send would suspend this process) or down.
send(Pid, Message) when node(Pid) =:= node() ->
    Pid ! Message,
    ok;
send(Pid, Message) ->
    case erlang:send(Pid, Message, [nosuspend, noconnect]) of
        ok -> ok;
        _ -> busy
    end.

sample_if_due(F = #flow{sends = S}) when S >= ?SAMPLE_EVERY ->
    sample(F);
sample_if_due(F) ->
    F.

%% Congested when the mailbox holds more than max_mailbox messages. A
%% process of another node is not sampled; a dead one is left to the
%% monitor.
sample(F = #flow{pid = Pid, max_mailbox = Max}) when node(Pid) =:= node() ->
    case process_info(Pid, message_queue_len) of
        {message_queue_len, Len} when Len > Max -> F#flow{sends = 0, congested = true};
        _ -> F#flow{sends = 0}
    end;
sample(F) ->
    F#flow{sends = 0}.

%% Sends what is held while the subscriber is ready; with nothing held,
%% the drop notice still pending.
flush(F = #flow{congested = true}) ->
    F;
flush(F = #flow{active = 0}) ->
    F;
flush(F = #flow{held = Held, queued = N, pending = P}) ->
    case queue:out(Held) of
        {{value, Item}, Held1} ->
            N1 = case Item of
                {message, _} -> N - 1;
                _ -> N
            end,
            flush(deliver(Item, F#flow{held = Held1, queued = N1}));
        {empty, _} when P > 0 ->
            deliver({dropped, P}, F#flow{pending = 0});
        {empty, _} ->
            F
    end.

%% How many messages may go to the subscriber straight from the
%% listener (a lane, see bus_srv) before its mailbox is due for a sample:
%% 0 unless it just pushes (local, active true, not congested, nothing
%% held or pending) and keeps its messages on its heap: an off_heap
%% mailbox may take messages from two senders (the listener thread and
%% bus_srv) in another order than they were sent.
-spec lane_budget(flow()) -> non_neg_integer().
lane_budget(#flow{pid = Pid, active = true, congested = false, pending = 0, queued = 0,
                  held = Held, sends = Sends}) when node(Pid) =:= node() ->
    case queue:is_empty(Held) andalso process_info(Pid, message_queue_data) of
        {message_queue_data, on_heap} -> max(?SAMPLE_EVERY - Sends, 0);
        _ -> 0
    end;
lane_budget(#flow{}) ->
    0.

%% N messages went to the subscriber through a lane: counted as
%% delivered, the mailbox sampled if due.
-spec sent_by_lane(non_neg_integer(), flow()) -> flow().
sent_by_lane(0, F) ->
    F;
sent_by_lane(N, F = #flow{delivered = D, sends = S}) ->
    sample_if_due(F#flow{delivered = D + N, sends = S + N}).

%% bus:activate/2: true pushes; false holds; once leaves one message of
%% credit, N adds N (from 0 if pushing).
-spec activate(active(), flow()) -> flow().
activate(true, F) ->
    flush(F#flow{active = true});
activate(false, F) ->
    F#flow{active = 0};
activate(once, F) ->
    flush(F#flow{active = 1});
activate(N, F = #flow{active = A}) when is_integer(N), N > 0 ->
    flush(F#flow{active = case A of true -> N; _ -> A + N end}).

%% A congested subscriber whose mailbox is down to half of max_mailbox is
%% ready again, and gets what is held.
-spec recheck(flow()) -> flow().
recheck(F = #flow{congested = false}) ->
    F;
recheck(F = #flow{pid = Pid}) when node(Pid) =/= node() ->
    %% The connection was busy: try again.
    flush(F#flow{congested = false});
recheck(F = #flow{pid = Pid, max_mailbox = Max}) ->
    case process_info(Pid, message_queue_len) of
        {message_queue_len, Len} when Len =< Max div 2 ->
            flush(F#flow{congested = false, sends = 0});
        _ ->
            F
    end.

%% Sends everything held, whatever the credit and the mailbox (the
%% subscription ends with its bus, or falls back to push on a downgrade).
-spec drain(flow()) -> flow().
drain(F) ->
    flush(F#flow{active = true, congested = false}).

%% How many more messages bus_srv may take from the bus for this
%% subscriber: what is left of max_queue with overflow block, infinity
%% otherwise.
-spec room(flow()) -> non_neg_integer() | infinity.
room(#flow{overflow = block, max_queue = Max, queued = N}) ->
    max(Max - N, 0);
room(#flow{}) ->
    infinity.

-spec name(flow()) -> term().
name(#flow{name = Name}) ->
    Name.

-spec delivered(flow()) -> non_neg_integer().
delivered(#flow{delivered = D}) ->
    D.

-spec dropped(flow()) -> non_neg_integer().
dropped(#flow{dropped = D}) ->
    D.

-spec is_passive(flow()) -> boolean().
is_passive(#flow{active = A}) ->
    A =:= 0.

-spec is_congested(flow()) -> boolean().
is_congested(#flow{congested = C}) ->
    C.

%% For bus:info/1.
-spec info(flow()) -> map().
info(#flow{active = A, delivered = D, queued = Q, dropped = Dr, max_queue = MQ,
           max_mailbox = MM, overflow = O, congested = C}) ->
    #{active => case A of 0 -> false; _ -> A end,
      delivered => D, queued => Q, dropped => Dr, max_queue => MQ, max_mailbox => MM,
      overflow => O, congested => C}.

%% The options to keep for a restarted bus_srv (bus_tables): the mode as
%% it stands. bus_srv saves them when the subscriber sets them and when it
%% becomes passive, so a restart keeps a passive subscriber passive, and
%% gives one with credit left at most the credit it last set.
-spec persisted(flow()) -> options().
persisted(#flow{active = A, max_queue = Q, max_mailbox = M, overflow = O}) ->
    #{active => case A of 0 -> false; _ -> A end, max_queue => Q, max_mailbox => M,
      overflow => O}.
