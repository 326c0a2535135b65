%% Flow control for subscribers (bus:subscribe/2, bus:activate/1,2): the
%% active modes and their transitions, max_queue with overflow drop
%% (exact drop notices, where the gap is) and block (the bus's writers
%% wait), the mailbox bound, the defaults under a million messages, and
%% subscriber churn at scale.
%%
%% sync/1 makes the assertions exact without waiting: bus:info/1 has the
%% bus's bus_srv forward everything its listener queued before it
%% answers, so after it every message the bus_srv sent us is in our
%% mailbox.
-module(bus_flow_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, init_per_group/2, end_per_group/2, suite/0, init_per_suite/1, end_per_suite/1, end_per_testcase/2]).
-export([defaults_push/1, once_delivers_one/1, n_delivers_n_and_activate_adds/1,
         activate_once_and_true/1, passive_from_the_start/1,
         drop_notice_where_the_gap_is/1, notices_use_no_credit/1,
         mailbox_bound_in_push_mode/1, block_holds_the_writers/1,
         block_beside_drop_and_push/1, resubscribe_changes_options/1,
         bus_down_after_what_was_held/1, restart_keeps_the_mode/1,
         bad_options/1, proplist_options/1,
         stuck_subscriber_under_a_million/1, churn_on_a_hundred_buses/1]).
-export([lane_keeps_order_and_counts/1, lane_gives_way_to_a_passive_subscriber/1,
         no_lane_for_an_off_heap_mailbox/1, lanes_off_by_env/1]).

suite() -> [{timetrap, {minutes, 5}}].

all() ->
    [{group, nif}, {group, port}, {group, lanes}].

%% Every case against both backends, with the same assertions.
groups() ->
    bus_test_lib:backend_groups(
      [defaults_push, once_delivers_one, n_delivers_n_and_activate_adds,
       activate_once_and_true, passive_from_the_start, drop_notice_where_the_gap_is,
       notices_use_no_credit, mailbox_bound_in_push_mode, block_holds_the_writers,
       block_beside_drop_and_push, resubscribe_changes_options, bus_down_after_what_was_held,
       restart_keeps_the_mode, bad_options, proplist_options,
       stuck_subscriber_under_a_million, churn_on_a_hundred_buses]) ++
    %% Lanes (bus_srv): the NIF backend's alone.
    [{lanes, [], [lane_keeps_order_and_counts, lane_gives_way_to_a_passive_subscriber,
                  no_lane_for_an_off_heap_mailbox, lanes_off_by_env]}].

init_per_group(lanes, Config) -> bus_test_lib:use_backend(nif, Config);
init_per_group(Backend, Config) -> bus_test_lib:use_backend(Backend, Config).
end_per_group(_Backend, _Config) -> bus_test_lib:use_backend(nif).

init_per_suite(Config) -> bus_test_lib:start(Config).
end_per_suite(Config) -> bus_test_lib:stop(Config).
end_per_testcase(_Case, Config) ->
    bus_test_lib:flush(),
    bus_test_lib:cleanup(Config).

%% subscribe/1 pushes, with the documented defaults.
defaults_push(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    send(Bus, 1, 3),
    [{bus, Bus, <<"1">>}, {bus, Bus, <<"2">>}, {bus, Bus, <<"3">>}] = sync(Bus),
    ?assertEqual(#{active => true, delivered => 3, queued => 0, dropped => 0,
                   max_queue => 1000, max_mailbox => 1000, overflow => drop,
                   congested => false},
                 mine(Bus)),
    ok = bus:unsubscribe(Bus).

%% once: one message, then {bus_passive, Name}; the rest is held.
once_delivers_one(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => once}),
    send(Bus, 1, 3),
    [{bus, Bus, <<"1">>}, {bus_passive, Bus}] = sync(Bus),
    #{active := false, delivered := 1, queued := 2} = mine(Bus),
    ok = bus:unsubscribe(Bus).

%% N: N messages, then passive; activate(Name, N) adds N to what is left.
n_delivers_n_and_activate_adds(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => 2}),
    send(Bus, 1, 5),
    [{bus, Bus, <<"1">>}, {bus, Bus, <<"2">>}, {bus_passive, Bus}] = sync(Bus),
    ok = bus:activate(Bus, 2),
    [{bus, Bus, <<"3">>}, {bus, Bus, <<"4">>}, {bus_passive, Bus}] = sync(Bus),
    %% One held, credit 3: 2 left after it.
    ok = bus:activate(Bus, 3),
    [{bus, Bus, <<"5">>}] = sync(Bus),
    #{active := 2, queued := 0} = mine(Bus),
    ok = bus:activate(Bus, 1),
    #{active := 3} = mine(Bus),
    send(Bus, 6, 9),
    [{bus, Bus, <<"6">>}, {bus, Bus, <<"7">>}, {bus, Bus, <<"8">>}, {bus_passive, Bus}]
        = sync(Bus),
    #{active := false, delivered := 8, queued := 1} = mine(Bus),
    ok = bus:unsubscribe(Bus).

%% activate/1 is once (it sets one message of credit, it does not add);
%% activate(Name, true) pushes again, starting with what was held.
activate_once_and_true(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => false}),
    send(Bus, 1, 4),
    [] = sync(Bus),
    ok = bus:activate(Bus),
    [{bus, Bus, <<"1">>}, {bus_passive, Bus}] = sync(Bus),
    ok = bus:activate(Bus, true),
    [{bus, Bus, <<"2">>}, {bus, Bus, <<"3">>}, {bus, Bus, <<"4">>}] = sync(Bus),
    send(Bus, 5, 5),
    [{bus, Bus, <<"5">>}] = sync(Bus),
    #{active := true, delivered := 5, queued := 0} = mine(Bus),
    %% N from push starts from 0.
    ok = bus:activate(Bus, 1),
    send(Bus, 6, 7),
    [{bus, Bus, <<"6">>}, {bus_passive, Bus}] = sync(Bus),
    ok = bus:unsubscribe(Bus).

%% active => false holds everything until activated; activate(Name,
%% false) makes a pushing subscriber passive, with no notice.
passive_from_the_start(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => false}),
    send(Bus, 1, 3),
    [] = sync(Bus),
    #{active := false, delivered := 0, queued := 3} = mine(Bus),
    ok = bus:activate(Bus, true),
    [{bus, Bus, <<"1">>}, {bus, Bus, <<"2">>}, {bus, Bus, <<"3">>}] = sync(Bus),
    ok = bus:activate(Bus, false),
    send(Bus, 4, 4),
    [] = sync(Bus),
    #{active := false, queued := 1} = mine(Bus),
    {error, not_subscribed} = bus:activate(bus_test_lib:new_bus(Config)),
    ok = bus:unsubscribe(Bus),
    {error, not_subscribed} = bus:activate(Bus).

%% overflow drop: what max_queue cannot hold is discarded, and the
%% subscriber is told, once per run of drops, just before the first
%% message after them (or, with nothing after them, when it is active).
drop_notice_where_the_gap_is(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => false, max_queue => 3, overflow => drop}),
    send(Bus, 1, 5),
    #{queued := 3, dropped := 2} = mine(Bus),
    ok = bus:activate(Bus, 2),
    [{bus, Bus, <<"1">>}, {bus, Bus, <<"2">>}, {bus_passive, Bus}] = sync(Bus),
    %% 4 and 5 were dropped after 3: the notice goes before 6.
    send(Bus, 6, 6),
    ok = bus:activate(Bus, true),
    [{bus, Bus, <<"3">>}, {bus_dropped, Bus, 2}, {bus, Bus, <<"6">>}] = sync(Bus),
    %% Nothing after the drops: the notice comes with the activation.
    ok = bus:activate(Bus, false),
    send(Bus, 7, 12),
    [] = sync(Bus),
    ok = bus:activate(Bus, true),
    [{bus, Bus, <<"7">>}, {bus, Bus, <<"8">>}, {bus, Bus, <<"9">>},
     {bus_dropped, Bus, 3}] = sync(Bus),
    #{delivered := 7, dropped := 5, queued := 0} = mine(Bus),
    ok = bus:unsubscribe(Bus).

%% Drop notices use no once/N credit.
notices_use_no_credit(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => false, max_queue => 1}),
    send(Bus, 1, 3),
    ok = bus:activate(Bus),
    [{bus, Bus, <<"1">>}, {bus_passive, Bus}] = sync(Bus),
    ok = bus:activate(Bus),
    [{bus_dropped, Bus, 2}] = sync(Bus),
    #{active := 1} = mine(Bus),
    send(Bus, 4, 4),
    [{bus, Bus, <<"4">>}, {bus_passive, Bus}] = sync(Bus),
    ok = bus:unsubscribe(Bus).

%% Push mode: a subscriber whose mailbox holds more than max_mailbox is
%% sent no more (it is sampled every 64 messages); max_queue more are
%% held, the rest dropped. When it reads again it gets everything held
%% and one notice: delivered + dropped = sent, in order.
mailbox_bound_in_push_mode(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    N = 2000,
    {Pid, Ref} = stuck_subscriber(Bus, #{max_mailbox => 100, max_queue => 50}, N),
    send(Bus, 1, N),
    #{Pid := Info} = maps:get(subscriptions, bus:info(Bus)),
    #{congested := true, queued := 50, delivered := Delivered, dropped := Dropped} = Info,
    {message_queue_len, Len} = process_info(Pid, message_queue_len),
    ct:log("delivered ~b, queued 50, dropped ~b, mailbox ~b", [Delivered, Dropped, Len]),
    ?assert(Len =< 100 + 64),
    ?assertEqual(N, Delivered + 50 + Dropped),
    Pid ! read,
    {Numbers, Notices} = receive {Ref, Ns, Ds} -> {Ns, Ds} after 30000 -> ct:fail(stuck) end,
    %% In order, the drops in one run, told where they happened.
    First = lists:seq(1, Delivered + 50),
    ?assertEqual(First, Numbers),
    ?assertEqual([{Delivered + 50, Dropped}], Notices),
    #{Pid := #{delivered := All, dropped := Dropped, congested := false}} =
        maps:get(subscriptions, bus:info(Bus)),
    ?assertEqual(Delivered + 50, All),
    exit(Pid, kill).

%% overflow block: with max_queue held, this node takes no more from the
%% bus; its listener's window fills and it holds the bus, so a timed
%% broadcast from another process times out. After activation the
%% subscriber gets every message that was broadcast, in order, exactly
%% once, and info counts the time the bus was held for it.
block_holds_the_writers(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => false, max_queue => 10, overflow => block}),
    Sent = write_until_timeout(Bus),
    ct:log("~b broadcasts returned before one timed out", [Sent]),
    #{blocked := true, subscriptions := #{}} = Info = bus:info(Bus),
    #{queued := 10, dropped := 0} = mine(Bus),
    #{listener := #{queued := InListener}} = Info,
    ?assertEqual(Sent, 10 + InListener),
    ok = bus:activate(Bus, true),
    ?assertEqual(lists:seq(1, Sent), numbers(Bus, Sent)),
    send(Bus, Sent + 1, Sent + 1),
    [{bus, Bus, Last}] = sync(Bus),
    ?assertEqual(Sent + 1, binary_to_integer(Last)),
    #{blocked := false, blocked_us := Blocked, block_held_us := Held} = bus:info(Bus),
    ?assert(Blocked > 0),
    ?assert(Held > 0),
    ok = bus:unsubscribe(Bus).

%% Subscribers of a blocked bus that chose drop, or push, get everything
%% taken from the bus until it was held, and the rest after.
block_beside_drop_and_push(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Self = self(),
    Others = [spawn_link(fun() ->
                  ok = bus:subscribe(Bus, Options),
                  Self ! {subscribed, self()},
                  collect_until_told(Bus, [])
              end) || Options <- [#{}, #{overflow => drop, max_queue => 100000}]],
    [receive {subscribed, P} -> ok after 5000 -> ct:fail(not_subscribed) end || P <- Others],
    ok = bus:subscribe(Bus, #{active => false, max_queue => 5, overflow => block}),
    Sent = write_until_timeout(Bus),
    %% Taken from the bus: up to the blocking subscriber's max_queue.
    _ = sync(Bus),
    [begin
         P ! {report, self()},
         Got = receive {P, Ns} -> Ns after 5000 -> ct:fail(no_report) end,
         ?assertEqual(lists:seq(1, 5), Got)
     end || P <- Others],
    ok = bus:activate(Bus, true),
    ?assertEqual(lists:seq(1, Sent), numbers(Bus, Sent)),
    _ = sync(Bus),
    [begin
         P ! {report, self()},
         Got = receive {P, Ns} -> Ns after 5000 -> ct:fail(no_report) end,
         ?assertEqual(lists:seq(1, Sent), Got),
         unlink(P),
         exit(P, kill)
     end || P <- Others],
    ok = bus:unsubscribe(Bus).

%% Subscribing again sets new options and keeps what is held.
resubscribe_changes_options(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => false, max_queue => 2}),
    send(Bus, 1, 3),
    ok = bus:subscribe(Bus, #{active => false, max_queue => 5, overflow => block}),
    #{queued := 2, dropped := 1, max_queue := 5, overflow := block} = mine(Bus),
    ok = bus:subscribe(Bus),
    [{bus, Bus, <<"1">>}, {bus, Bus, <<"2">>}, {bus_dropped, Bus, 1}] = sync(Bus),
    #{active := true, overflow := drop, max_queue := 1000} = mine(Bus),
    ok = bus:unsubscribe(Bus).

%% A bus removed: the subscriber gets what was held for it (whatever its
%% credit), then {bus_down, Name, gone}.
bus_down_after_what_was_held(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => false}),
    send(Bus, 1, 3),
    #{queued := 3} = mine(Bus),
    ok = bus:remove(Bus),
    [receive X -> ?assertEqual(Expected, X) after 5000 -> ct:fail({missing, Expected}) end
     || Expected <- [{bus, Bus, <<"1">>}, {bus, Bus, <<"2">>}, {bus, Bus, <<"3">>},
                     {bus_down, Bus, gone}]],
    [] = bus:subscribers(Bus).

%% A restarted bus_srv keeps each subscriber's mode and options: a
%% passive subscriber stays passive, and learns of the gap when it
%% activates.
restart_keeps_the_mode(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, #{active => once, max_queue => 7, overflow => block}),
    send(Bus, 1, 1),
    [{bus, Bus, <<"1">>}, {bus_passive, Bus}] = sync(Bus),
    {ok, Srv} = bus_tables:server(Bus),
    Ref = monitor(process, Srv),
    exit(Srv, kill),
    receive {'DOWN', Ref, process, Srv, killed} -> ok after 5000 -> ct:fail(not_killed) end,
    ok = bus_test_lib:wait_until(fun() -> new_server(Bus, Srv) end, 5000),
    #{active := false, max_queue := 7, overflow := block, queued := 0} = mine(Bus),
    %% Nothing tells us when the new listener has joined: S does.
    ok = bus_test_lib:wait_listeners(Bus, 1),
    send(Bus, 2, 2),
    [] = sync(Bus),
    #{active := false, max_queue := 7, overflow := block, queued := 1} = mine(Bus),
    ok = bus:activate(Bus, true),
    [{bus_gap, Bus}, {bus, Bus, <<"2">>}] = sync(Bus),
    ok = bus:unsubscribe(Bus).

%% Anything but the documented options raises badarg, and subscribes
%% nothing.
bad_options(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Bad = [#{active => 0}, #{active => -1}, #{active => twice}, #{max_queue => 0},
           #{max_queue => infinity}, #{overflow => wait}, #{max_mailbox => 0},
           #{colour => blue}, [active], [{active, once} | bad], not_options],
    [?assertError(badarg, bus:subscribe(Bus, B)) || B <- Bad],
    [?assertError(badarg, bus:activate(Bus, A)) || A <- [0, -3, twice, 1.5]],
    [] = bus:subscribers(Bus).

%% Options as a keyword-style proplist (Elixir).
proplist_options(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus, [{active, 2}, {max_queue, 4}, {overflow, block}]),
    #{active := 2, max_queue := 4, overflow := block, max_mailbox := 1000} = mine(Bus),
    ok = bus_srv:subscribe(Bus, [{active, true}]),
    ok = bus_srv:activate(Bus, 3),
    #{active := 3, max_queue := 1000, overflow := drop} = mine(Bus),
    ok = bus:unsubscribe(Bus).

%% With the default options, a subscriber that reads nothing while a
%% million 2 KB messages are broadcast costs the node a bounded amount
%% of memory (README: flow control); when it reads again, it is told
%% exactly how many it missed.
stuck_subscriber_under_a_million(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    N = 1000000,
    {Pid, Ref} = stuck_subscriber(Bus, #{}, N),
    Message = binary:copy(<<"m">>, 2000),
    garbage_collect(),
    Before = erlang:memory(total),
    Most = lists:foldl(fun(I, Most) ->
                               ok = bus:broadcast(Bus, <<(integer_to_binary(I))/binary, " ", Message/binary>>),
                               case I rem 10000 of
                                   0 -> max(Most, erlang:memory(total));
                                   _ -> Most
                               end
                       end, Before, lists:seq(1, N)),
    Growth = Most - Before,
    #{Pid := Info} = maps:get(subscriptions, bus:info(Bus)),
    ct:log("largest growth of node memory: ~b KB; ~p", [Growth div 1024, Info]),
    ?assert(Growth < 64 * 1024 * 1024),
    #{delivered := Delivered, queued := Queued, dropped := Dropped} = Info,
    ?assertEqual(N, Delivered + Queued + Dropped),
    Pid ! read,
    {Numbers, Notices} = receive {Ref, Ns, Ds} -> {Ns, Ds} after 60000 -> ct:fail(stuck) end,
    Missed = lists:sum([C || {_, C} <- Notices]),
    ?assertEqual(Dropped, Missed),
    ?assertEqual(N, length(Numbers) + Missed),
    ?assertEqual(lists:seq(1, length(Numbers)), Numbers),
    exit(Pid, kill).

%% 10,000 processes subscribe to 100 buses with mixed options and die
%% while messages flow; afterwards each bus_srv has only its one lasting
%% subscriber (no subscription, monitor or held message of the dead),
%% the tables hold only its rows, and when it goes nothing is left.
churn_on_a_hundred_buses(Config) ->
    Buses = [bus_test_lib:new_bus(Config) || _ <- lists:seq(1, 100)],
    Self = self(),
    Keeper = spawn_link(fun() ->
        [ok = bus:subscribe(B, #{active => false, max_queue => 10}) || B <- Buses],
        Self ! kept,
        receive stop -> ok end
    end),
    receive kept -> ok after 30000 -> ct:fail(keeper) end,
    Writer = spawn_link(fun() -> write_round_robin(list_to_tuple(Buses), 0, #{}) end),
    Options = [#{}, #{active => once}, #{active => 3, max_queue => 5},
               #{active => false, max_queue => 2, overflow => block},
               #{overflow => block, max_queue => 20}, #{max_mailbox => 10, max_queue => 10},
               [{active, 2}, {overflow, drop}]],
    {Micros, ok} = timer:tc(fun() -> churn(Buses, list_to_tuple(Options), 10000, 200) end),
    Writer ! {stop, self()},
    {Written, Results} = receive {written, W, R} -> {W, R} after 30000 -> ct:fail(writer_stuck) end,
    ct:log("churn of 10,000 subscribers in ~b ms; ~b broadcasts meanwhile: ~p",
           [Micros div 1000, Written, Results]),
    ?assert(Written > 0),
    %% A subscriber's death reaches its bus_srv as a monitor message,
    %% which may come after ours.
    [begin
         {ok, Srv} = bus_tables:server(B),
         ok = bus_test_lib:wait_until(fun() -> bus:subscribers(B) =:= [Keeper] end, 5000),
         #{subscriptions := Subs} = bus:info(B),
         [Keeper] = maps:keys(Subs),
         {monitors, [{process, Keeper}]} = process_info(Srv, monitors),
         #{Keeper := #{queued := Q}} = Subs,
         ?assert(Q =< 10)
     end || B <- Buses],
    ?assertEqual(200, ets:info(bus_subscriptions, size)),
    Ref = monitor(process, Keeper),
    unlink(Keeper),
    Keeper ! stop,
    receive {'DOWN', Ref, process, Keeper, _} -> ok after 5000 -> ct:fail(keeper_stuck) end,
    %% Each bus_srv leaves its bus and stops when its last subscriber is
    %% gone.
    ok = bus_test_lib:wait_until(fun() -> supervisor:which_children(bus_srv_sup) =:= [] end,
                                 10000),
    0 = ets:info(bus_servers, size),
    0 = ets:info(bus_subscriptions, size),
    [0 = bus_test_lib:listeners(B) || B <- Buses].

%% Internal.

%% Broadcasts From..To (as decimal numbers).
%% Lanes. Three subscribers that just push: the listener's thread sends
%% to them itself, in lanes of 64 messages (the mailbox sample's period);
%% each gets every message once, in order, and info counts each of them,
%% as if bus_srv had sent them.
lane_keeps_order_and_counts(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    N = 300,
    Self = self(),
    Others = [spawn_link(fun() ->
                                 ok = bus:subscribe(Bus),
                                 Self ! {ready, self()},
                                 Self ! {numbers, self(), numbers(Bus, N)}
                         end) || _ <- [1, 2]],
    [receive {ready, P} -> ok end || P <- Others],
    ok = bus:subscribe(Bus),
    send(Bus, 1, 1),
    ?assertEqual(open, lane(Bus)),
    send(Bus, 2, N),
    ?assertEqual(lists:seq(1, N), numbers(Bus, N)),
    [receive {numbers, P, Ns} -> ?assertEqual(lists:seq(1, N), Ns) end || P <- Others],
    Info = bus:info(Bus),
    #{received := N, forwarded := Forwarded, subscriptions := Subs} = Info,
    ?assertEqual(3 * N, Forwarded),
    ?assertEqual(lists:sum([byte_size(integer_to_binary(I)) || I <- lists:seq(1, N)]),
                 maps:get(received_bytes, Info)),
    [?assertMatch(#{delivered := N, queued := 0, dropped := 0}, S) || S <- maps:values(Subs)],
    ok = bus:unsubscribe(Bus).

%% A subscriber that holds (active false) closes the lane for everyone:
%% the other still gets every message, in order, and the passive one gets
%% what was broadcast after it subscribed once active; when it leaves, the
%% lane opens again.
lane_gives_way_to_a_passive_subscriber(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = bus:subscribe(Bus),
    send(Bus, 1, 5),
    ?assertEqual(open, lane(Bus)),
    Self = self(),
    Passive = spawn_link(fun() ->
                                 ok = bus:subscribe(Bus, #{active => false}),
                                 Self ! subscribed,
                                 receive go -> ok end,
                                 ok = bus:activate(Bus, true),
                                 Self ! {numbers, numbers(Bus, 5)},
                                 ok = bus:unsubscribe(Bus),
                                 Self ! unsubscribed
                         end),
    receive subscribed -> ok end,
    send(Bus, 6, 10),
    ?assertEqual(closed, lane(Bus)),
    ?assertEqual(lists:seq(1, 10), numbers(Bus, 10)),
    Passive ! go,
    receive {numbers, Ns} -> ?assertEqual(lists:seq(6, 10), Ns) end,
    receive unsubscribed -> ok end,
    send(Bus, 11, 11),
    ?assertEqual(open, lane(Bus)),
    ?assertEqual([11], numbers(Bus, 1)),
    ok = bus:unsubscribe(Bus).

%% A subscriber whose mailbox is off its heap may take messages from two
%% senders out of order: it gets no lane, and every message through
%% bus_srv.
no_lane_for_an_off_heap_mailbox(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    Self = self(),
    Sub = spawn_link(fun() ->
                             process_flag(message_queue_data, off_heap),
                             ok = bus:subscribe(Bus),
                             Self ! subscribed,
                             Self ! {numbers, numbers(Bus, 100)},
                             receive stop -> ok end
                     end),
    receive subscribed -> ok end,
    send(Bus, 1, 100),
    receive {numbers, Ns} -> ?assertEqual(lists:seq(1, 100), Ns) end,
    ?assertEqual(closed, lane(Bus)),
    unlink(Sub),
    Sub ! stop.

%% With the application env's lanes false, a bus_srv started then opens
%% none, and forwards everything itself.
lanes_off_by_env(Config) ->
    Bus = bus_test_lib:new_bus(Config),
    ok = application:set_env(bus, lanes, false),
    try
        ok = bus:subscribe(Bus),
        send(Bus, 1, 100),
        ?assertEqual(off, lane(Bus)),
        ?assertEqual(lists:seq(1, 100), numbers(Bus, 100)),
        #{forwarded := 100} = bus:info(Bus),
        ok = bus:unsubscribe(Bus)
    after
        ok = application:unset_env(bus, lanes)
    end.

%% The bus's bus_srv's lane (the last field of its state, by the rule
%% that new fields go at the end), once what was broadcast is forwarded.
lane(Bus) ->
    _ = bus:info(Bus),
    {ok, Srv} = bus_tables:server(Bus),
    State = sys:get_state(Srv),
    element(tuple_size(State), State).

send(Bus, From, To) ->
    [ok = bus:broadcast(Bus, integer_to_binary(I)) || I <- lists:seq(From, To)],
    ok.

%% Every message bus_srv has sent us so far, taken from the mailbox.
sync(Bus) ->
    _ = bus:info(Bus),
    {messages, Messages} = process_info(self(), messages),
    [receive M -> M after 0 -> ct:fail(vanished) end || M <- Messages].

%% This process's subscription, as info/1 shows it.
mine(Bus) ->
    #{subscriptions := #{} = Subs} = bus:info(Bus),
    maps:get(self(), Subs).

numbers(Bus, N) ->
    [receive {bus, Bus, M} -> binary_to_integer(M) after 10000 -> ct:fail({missing, I}) end
     || I <- lists:seq(1, N)].

%% Broadcasts 1, 2, ... until one times out (200 ms); returns how many
%% returned ok.
write_until_timeout(Bus) ->
    Self = self(),
    spawn_link(fun() -> Self ! {written, write_until_timeout(Bus, 1)} end),
    receive {written, N} -> N after 30000 -> ct:fail(never_blocked) end.

write_until_timeout(Bus, I) ->
    case bus:broadcast(Bus, integer_to_binary(I), #{timeout => 200}) of
        ok -> write_until_timeout(Bus, I + 1);
        {error, timeout} -> I - 1
    end.

%% A subscriber that reads nothing until told `read', then reads until
%% it has had (or been told it missed) N messages, and answers
%% {Ref, Numbers, [{AfterNumber, DroppedCount}]}.
stuck_subscriber(Bus, Options, N) ->
    Self = self(),
    Ref = make_ref(),
    Pid = spawn(fun() ->
        ok = bus:subscribe(Bus, Options),
        Self ! {Ref, subscribed},
        receive read -> ok end,
        {Numbers, Notices} = read_all(Bus, N, 0, [], []),
        Self ! {Ref, Numbers, Notices},
        receive stop -> ok end
    end),
    receive {Ref, subscribed} -> {Pid, Ref} after 5000 -> ct:fail(not_subscribed) end.

read_all(_Bus, N, Seen, Numbers, Notices) when Seen >= N ->
    {lists:reverse(Numbers), lists:reverse(Notices)};
read_all(Bus, N, Seen, Numbers, Notices) ->
    receive
        {bus, Bus, M} ->
            [I | _] = binary:split(M, <<" ">>),
            read_all(Bus, N, Seen + 1, [binary_to_integer(I) | Numbers], Notices);
        {bus_dropped, Bus, C} ->
            After = case Numbers of [] -> 0; [Last | _] -> Last end,
            read_all(Bus, N, Seen + C, Numbers, [{After, C} | Notices])
    after 30000 -> ct:fail({read_all_stuck, Seen})
    end.

collect_until_told(Bus, Acc) ->
    receive
        {bus, Bus, M} -> collect_until_told(Bus, [binary_to_integer(M) | Acc]);
        {report, To} -> To ! {self(), lists:reverse(Acc)}, collect_until_told(Bus, Acc)
    end.

new_server(Bus, Old) ->
    case bus_tables:server(Bus) of
        {ok, Old} -> false;
        {ok, New} -> is_process_alive(New);
        error -> false
    end.

%% Broadcasts round robin on the buses (a held bus times out, and the
%% writer moves on) until told to stop.
write_round_robin(Buses, I, Results) ->
    receive
        {stop, To} -> To ! {written, I, Results}
    after 0 ->
        Bus = element(I rem tuple_size(Buses) + 1, Buses),
        R = bus:broadcast(Bus, integer_to_binary(I), #{timeout => 20}),
        write_round_robin(Buses, I + 1, maps:update_with(R, fun(C) -> C + 1 end, 1, Results))
    end.

%% Total subscriber processes, at most Live at a time: each subscribes to
%% one to three buses with options of the list, broadcasts on one of them,
%% reads a few messages or none, and dies (killed, or by returning).
churn(Buses, Options, Total, Live) ->
    Start = fun(K) ->
        {Pid, Ref} = spawn_monitor(fun() ->
            rand:seed(exsss, {K, K * 7, K * 13}),
            Mine = [lists:nth(rand:uniform(length(Buses)), Buses)
                    || _ <- lists:seq(1, rand:uniform(3))],
            case [bus:subscribe(B, element(rand:uniform(tuple_size(Options)), Options))
                  || B <- Mine] -- [ok || _ <- Mine] of
                [] -> ok;
                Failed -> exit({subscribe_failed, Failed})
            end,
            _ = bus:broadcast(hd(Mine), integer_to_binary(K), #{timeout => 20}),
            [receive _ -> ok after 0 -> ok end || _ <- lists:seq(1, rand:uniform(5))],
            case K rem 2 of
                0 -> exit(kill);
                1 -> ok
            end
        end),
        {Ref, Pid}
    end,
    churn_loop(Start, maps:from_list([Start(K) || K <- lists:seq(1, Live)]), Live + 1, Total).

churn_loop(_Start, Running, _Next, _Total) when map_size(Running) =:= 0 ->
    ok;
churn_loop(Start, Running, Next, Total) ->
    receive
        {'DOWN', Ref, process, _, Reason} when Reason =:= normal; Reason =:= kill ->
            Running1 = maps:remove(Ref, Running),
            case Next =< Total of
                true ->
                    {Ref1, Pid} = Start(Next),
                    churn_loop(Start, Running1#{Ref1 => Pid}, Next + 1, Total);
                false ->
                    churn_loop(Start, Running1, Next, Total)
            end;
        {'DOWN', _, process, _, Reason} ->
            ct:fail({subscriber_failed, Reason})
    after 60000 -> ct:fail({churn_stuck, map_size(Running)})
    end.
