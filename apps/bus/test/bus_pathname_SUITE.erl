%% Pathnames that name anything but a bus file (a FIFO, a socket, devices,
%% a directory, a symbolic link loop, a dangling link, a huge file, a
%% /proc file): every call answers within a second with the reason, and
%% one bad bus never holds up another bus's subscribers or subscribe.
%% Devices are made with mknod, so the suite needs root (as CI has).
-module(bus_pathname_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, init_per_suite/1, end_per_suite/1, init_per_testcase/2, end_per_testcase/2]).
-export([every_call_refuses_every_kind_promptly/1, subscribe_leaves_nothing_behind/1,
         good_buses_flow_while_bad_ones_are_tried/1]).

%% Answers come within this many milliseconds.
-define(PROMPTLY, 1000).

all() ->
    [every_call_refuses_every_kind_promptly, subscribe_leaves_nothing_behind,
     good_buses_flow_while_bad_ones_are_tried].

init_per_suite(Config) ->
    ?assertEqual("0\n", os:cmd("id -u")),
    Config1 = bus_test_lib:start(Config),
    %% Short: a socket's pathname has at most 107 bytes.
    Dir = string:trim(os:cmd("mktemp -d /tmp/bus-zoo.XXXXXX")),
    At = fun(Name) -> list_to_binary(filename:join(Dir, Name)) end,
    Sh = fun(Cmd) -> "" = os:cmd(Cmd ++ " 2>&1") end,
    Sh("mkfifo " ++ binary_to_list(At("fifo"))),
    %% The socket file stays when its listening socket is closed.
    {ok, L} = gen_tcp:listen(0, [{ifaddr, {local, At("socket")}}]),
    ok = gen_tcp:close(L),
    Sh("mknod " ++ binary_to_list(At("chr")) ++ " c 1 3"),
    Sh("mknod " ++ binary_to_list(At("blk")) ++ " b 7 0"),
    ok = file:make_dir(At("dir")),
    ok = file:make_symlink(At("loop-b"), At("loop-a")),
    ok = file:make_symlink(At("loop-a"), At("loop-b")),
    ok = file:make_symlink(At("nowhere"), At("dangling")),
    Sh("truncate -s 1T " ++ binary_to_list(At("huge"))),
    Invalid = fun(P) -> {invalid_bus_file, P} end,
    Kinds = [{fifo, At("fifo"), Invalid},
             {socket, At("socket"), Invalid},
             {character_device, At("chr"), Invalid},
             {block_device, At("blk"), Invalid},
             {directory, At("dir"), Invalid},
             {symlink_loop, At("loop-a"), fun(_) -> eloop end},
             {dangling_symlink, At("dangling"), fun(_) -> enoent end},
             {huge_file, At("huge"), Invalid},
             {proc_file, <<"/proc/self/status">>, Invalid}],
    [{kinds, Kinds}, {zoo, Dir} | Config1].

end_per_suite(Config) ->
    ok = file:del_dir_r(?config(zoo, Config)),
    bus_test_lib:stop(Config).
init_per_testcase(_Case, Config) -> Config.
end_per_testcase(_Case, Config) -> bus_test_lib:flush(), bus_test_lib:cleanup(Config).

%% broadcast (plain, timed, no-wait), stat, remove, chmod, chown,
%% subscribe and info each answer within a second for every kind, with
%% the reason the bus cannot be used.
every_call_refuses_every_kind_promptly(Config) ->
    [begin
         Want = Expect(Path),
         Calls = [{broadcast, fun() -> bus:broadcast(Path, <<"0 m">>) end},
                  {broadcast_timed, fun() -> bus:broadcast(Path, <<"0 m">>, #{timeout => 100}) end},
                  {broadcast_nowait, fun() -> bus:broadcast(Path, <<"0 m">>, [nowait]) end},
                  {stat, fun() -> bus:stat(Path) end},
                  {remove, fun() -> bus:remove(Path) end},
                  {chmod, fun() -> bus:chmod(Path, 8#600) end},
                  {chown, fun() -> bus:chown(Path, 0, 0) end},
                  {subscribe, fun() -> bus_srv:subscribe(Path) end}],
         [case promptly(Call) of
              {error, Reason} -> ?assert(matches(Want, Reason), {Kind, Name, Reason});
              Other -> ct:fail({Kind, Name, Other})
          end || {Name, Call} <- Calls],
         #{listeners := undefined, subscribers := []} = promptly(fun() -> bus_srv:info(Path) end),
         {ok, _} = file:read_link_info(Path)
     end || {Kind, Path, Expect} <- ?config(kinds, Config)],
    ok.

%% A refused subscribe leaves no bus_srv, subscription or monitor behind.
subscribe_leaves_nothing_behind(Config) ->
    Paths = [P || {_, P, _} <- ?config(kinds, Config)],
    [{error, _} = bus_srv:subscribe(P) || P <- Paths],
    ok = bus_test_lib:wait_until(
           fun() -> [] =:= [P || P <- Paths, ets:member(bus_servers, P)] end, ?PROMPTLY),
    [] = [R || R = {{P, _}, _} <- ets:tab2list(bus_subscriptions), lists:member(P, Paths)],
    ok.

%% While every kind is tried, many times and at once, a subscriber of a
%% good bus keeps getting every message, in order, and subscribing to
%% another good bus at the same moment succeeds within a second.
good_buses_flow_while_bad_ones_are_tried(Config) ->
    Good = bus_test_lib:new_bus(Config),
    Other = bus_test_lib:new_bus(Config),
    Self = self(),
    Collector = spawn_link(fun() -> ok = bus_srv:subscribe(Good), Self ! subscribed,
                                    collect(0) end),
    receive subscribed -> ok after 5000 -> ct:fail(not_subscribed) end,
    Writer = spawn_link(fun() -> write(Good, 1) end),
    %% Messages flow before the bad calls start.
    ok = bus_test_lib:wait_until(fun() -> count(Collector) >= 100 end, 5000),
    Before = count(Collector),
    Tries = [spawn_monitor(fun() ->
                 [begin
                      {error, _} = bus_srv:subscribe(P),
                      {error, _} = bus:broadcast(P, <<"0 m">>),
                      {error, _} = bus:stat(P)
                  end || _ <- lists:seq(1, 20)]
             end) || {_, P, _} <- ?config(kinds, Config)],
    OtherSub = spawn_link(fun() -> ok = bus_srv:subscribe(Other), Self ! {subscribed, self()},
                                   receive {bus, Other, M} -> Self ! {other, M} end end),
    receive {subscribed, OtherSub} -> ok after ?PROMPTLY -> ct:fail(other_subscribe_slow) end,
    [receive {'DOWN', Ref, process, Pid, normal} -> ok after 10000 -> ct:fail(bad_calls_hung) end
     || {Pid, Ref} <- Tries],
    After = count(Collector),
    ?assert(After > Before),
    ok = bus_srv:broadcast(Other, <<"0 other">>),
    receive {other, <<"0 other">>} -> ok after ?PROMPTLY -> ct:fail(other_bus_silent) end,
    Writer ! {stop, self()},
    Last = receive {written, N} -> N after 10000 -> ct:fail(writer_stuck) end,
    ok = bus_test_lib:wait_until(fun() -> count(Collector) >= Last end, 5000),
    Collector ! {result, self()},
    receive {result, Last, []} -> ok;
            {result, Got, Gaps} -> ct:fail({collected, Got, Last, Gaps})
    after 5000 -> ct:fail(no_result)
    end.

%% Internal.

%% Runs Fun in a process of its own; fails the case if it does not answer
%% within ?PROMPTLY.
promptly(Fun) ->
    {Pid, Ref} = spawn_monitor(fun() -> exit({answer, Fun()}) end),
    receive
        {'DOWN', Ref, process, Pid, {answer, Answer}} -> Answer;
        {'DOWN', Ref, process, Pid, Crash} -> ct:fail({crashed, Crash})
    after ?PROMPTLY ->
        exit(Pid, kill),
        ct:fail({no_answer_within_ms, ?PROMPTLY})
    end.

matches(Want, Want) -> true;
matches(eloop, {os_error, eloop, Text}) -> is_binary(Text);
matches(_, _) -> false.

%% Broadcasts "0 N" for N = 1, 2, ... until told to stop.
write(Bus, N) ->
    receive {stop, From} -> From ! {written, N - 1}
    after 0 ->
        ok = bus:broadcast(Bus, <<"0 ", (integer_to_binary(N))/binary>>),
        write(Bus, N + 1)
    end.

%% Counts messages, noting every one that is not the next number.
collect(Last) -> collect(Last, []).
collect(Last, Gaps) ->
    receive
        {bus, _, <<"0 ", N/binary>>} ->
            I = binary_to_integer(N),
            collect(I, case I =:= Last + 1 of true -> Gaps; false -> [{Last, I} | Gaps] end);
        {count, From} -> From ! {count, Last}, collect(Last, Gaps);
        {result, From} -> From ! {result, Last, lists:reverse(Gaps)}
    end.

count(Collector) ->
    Collector ! {count, self()},
    receive {count, N} -> N after 5000 -> ct:fail(collector_stuck) end.
